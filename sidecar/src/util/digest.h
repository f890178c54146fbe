/*
 * digest: SHA-256 as warren computes it per message (trace ids, keys derived
 * from a body, the DLQ headers' signatures).
 *
 * OpenSSL 3 looks the algorithm up in its providers on every use of
 * EVP_sha256() (an "implicit fetch": a lock and a table lookup, about three
 * times the digest itself for a short input). wr_sha256() fetches it once per
 * process and hands out the same immutable EVP_MD ever after; it is safe from
 * any thread. Falls back to EVP_sha256() if the fetch fails.
 */
#ifndef WR_DIGEST_H
#define WR_DIGEST_H

#include <openssl/evp.h>

/* SHA-256, fetched once. */
const EVP_MD *wr_sha256(void);

#endif
