/*
 * test_units: durations and sizes (units.c), parsed and formatted: every
 * unit, sums, the refusals (no unit, decimal size units, signs, overflow),
 * and that what the formatters write parses back to the same value.
 */
#include <stdint.h>

#include "check.h"
#include "units.h"

static void test_parse_duration(void)
{
    static const struct {
        const char *text;
        int rc;
        int64_t ms;
    } cases[] = {
        {"0", 0, 0},
        {"250ms", 0, 250},
        {"5s", 0, 5000},
        {"2m", 0, 120000},
        {"1h", 0, 3600000},
        {"7d", 0, 604800000},
        {"1m30s", 0, 90000},
        {"1h1ms", 0, 3600001},
        {"0s", 0, 0},
        {"", -1, 0},
        {"5", -1, 0},
        {"5x", -1, 0},
        {"-5s", -1, 0},
        {"+5s", -1, 0},
        {"5 s", -1, 0},
        {"s", -1, 0},
        {"1.5s", -1, 0},
        {"5S", -1, 0},
        {"9223372036854775807ms", 0, INT64_MAX},
        {"9223372036854775808ms", -1, 0},
        {"106751991168d", -1, 0},
        {"9223372036854775s1s", -1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -7;
        int rc = wr_units_parse_duration(cases[i].text, &ms);
        if (rc != cases[i].rc) {
            fprintf(stderr, "duration '%s': ", cases[i].text);
        }
        CHECK_INT(rc, cases[i].rc);
        CHECK_INT(ms, cases[i].rc == 0 ? cases[i].ms : -7); /* untouched on failure */
    }
    int64_t ms = -7;
    CHECK_INT(wr_units_parse_duration(NULL, &ms), -1);
    CHECK_INT(ms, -7);
}

static void test_format_duration(void)
{
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        {0, "0s"},          {1, "1ms"},       {250, "250ms"},
        {1000, "1s"},       {90000, "1m30s"}, {300000, "5m"},
        {3600001, "1h1ms"}, {86400000, "1d"}, {31536000000LL, "365d"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[32];
        int64_t back = -1;
        wr_units_format_duration(cases[i].ms, out, sizeof(out));
        CHECK_STR(out, cases[i].text);
        CHECK_INT(wr_units_parse_duration(out, &back), 0);
        CHECK_INT(back, cases[i].ms);
    }
    char small[4];
    wr_units_format_duration(90061001, small, sizeof(small)); /* 1d1h1m1s1ms: cut, terminated */
    CHECK_STR(small, "1d1");
}

static void test_parse_size(void)
{
    static const struct {
        const char *text;
        int rc;
        int64_t bytes;
    } cases[] = {
        {"0", 0, 0},
        {"65536", 0, 65536},
        {"1B", 0, 1},
        {"512KiB", 0, 524288},
        {"4MiB", 0, 4194304},
        {"2GiB", 0, 2147483648LL},
        {"", -1, 0},
        {"KiB", -1, 0},
        {"4MB", -1, 0},
        {"4kb", -1, 0},
        {"4 MiB", -1, 0},
        {"-1", -1, 0},
        {"1.5MiB", -1, 0},
        {"4MiBs", -1, 0},
        {"9223372036854775807", 0, INT64_MAX},
        {"9223372036854775808", -1, 0},
        {"8589934592GiB", -1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t bytes = -7;
        int rc = wr_units_parse_size(cases[i].text, &bytes);
        if (rc != cases[i].rc) {
            fprintf(stderr, "size '%s': ", cases[i].text);
        }
        CHECK_INT(rc, cases[i].rc);
        CHECK_INT(bytes, cases[i].rc == 0 ? cases[i].bytes : -7);
    }
}

static void test_format_size(void)
{
    static const struct {
        int64_t bytes;
        const char *text;
    } cases[] = {
        {0, "0B"},
        {1, "1B"},
        {1000, "1000B"},
        {1024, "1KiB"},
        {524288, "512KiB"},
        {1536, "1536B"},
        {4194304, "4MiB"},
        {1073741824, "1GiB"},
        {536870912, "512MiB"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[32];
        int64_t back = -1;
        wr_units_format_size(cases[i].bytes, out, sizeof(out));
        CHECK_STR(out, cases[i].text);
        CHECK_INT(wr_units_parse_size(out, &back), 0);
        CHECK_INT(back, cases[i].bytes);
    }
}

int main(void)
{
    test_parse_duration();
    test_format_duration();
    test_parse_size();
    test_format_size();
    return check_report("test_units");
}
