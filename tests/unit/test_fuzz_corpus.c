/* Replays the checked-in fuzz corpus through the fuzzers' own entry code, so the unit suite guards every seed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The very code the fuzzers run (it is built into them the same way). */
#include "../fuzz/fuzz_fcgi_codec_one.c"
#include "../fuzz/fuzz_query_one.c"

typedef int (*one_input)(const uint8_t *data, size_t size, char *err, size_t errlen);

static uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, got;
    uint8_t *d = malloc(cap);
    while (d && (got = fread(d + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = realloc(d, cap *= 2);
            if (!bigger) free(d);
            d = bigger;
        }
    }
    fclose(f);
    if (!d) return NULL;
    /* An allocation of exactly the input's size, as libFuzzer gives, so a
     * read past the end is caught under AddressSanitizer. */
    uint8_t *exact = malloc(n ? n : 1);
    if (exact && n) memcpy(exact, d, n);
    free(d);
    *len = n;
    return exact;
}

/* Runs every file of dir (relative to the repository root, where the suite
 * runs) through one; the folder must not be empty. */
static void replay(const char *dir, one_input one)
{
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s (run from the repository root)", dir);
    int files = 0, failures = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[4096], err[256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = 0;
        uint8_t *data = read_whole(path, &len);
        if (!data) fail_msg("cannot read %s", path);
        files++;
        if (one(data, len, err, sizeof err) != 0) {
            print_error("%s: %s\n", path, err);
            failures++;
        }
        free(data);
    }
    closedir(d);
    if (files == 0) fail_msg("%s is empty", dir);
    if (failures) fail_msg("%d of %d inputs of %s fail", failures, files, dir);
}

static void fcgi_codec_corpus(void **state)
{
    (void)state;
    replay("tests/fuzz/corpus/fcgi_codec", fuzz_fcgi_codec_one);
}

static void query_corpus(void **state)
{
    (void)state;
    replay("tests/fuzz/corpus/query", fuzz_query_one);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fcgi_codec_corpus),
        cmocka_unit_test(query_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
