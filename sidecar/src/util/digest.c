/*
 * digest: SHA-256 fetched once. See digest.h.
 */
#include "digest.h"

#include <pthread.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256; /* set once by fetch(), read-only after */

static void fetch(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *wr_sha256(void)
{
    pthread_once(&once, fetch);
    return sha256 != NULL ? sha256 : EVP_sha256();
}
