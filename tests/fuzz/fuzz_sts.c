/* fuzz_sts.c — fuzz target for the MTA-STS parsers (mta/sts_policy.c), which read what any
 * recipient domain serves: the input is parsed as a policy file and as a TXT record, and
 * its first line is matched as an MX host against the policy's patterns. Promises checked:
 * a parsed policy has a known mode, max_age within 0..31557600, at most STS_POLICY_MAX_MX
 * non-empty lower-case patterns (at least one unless the mode is none), each matching
 * itself when it names a host; a TXT id is 1-32 letters and digits. Built as a libFuzzer
 * target by `make fuzz` (clang) and as a corpus + mutation replay in `make check` (gcc). */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mta/sts_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    sts_policy p;
    char *err = NULL;
    if (sts_policy_parse(text, size, &p, &err) == 0) {
        if (p.mode != STS_MODE_NONE && p.mode != STS_MODE_TESTING && p.mode != STS_MODE_ENFORCE) abort();
        if (p.max_age_s < 0 || p.max_age_s > STS_MAX_AGE_MAX) abort();
        if (p.nmx > STS_POLICY_MAX_MX || (p.mode != STS_MODE_NONE && p.nmx == 0)) abort();
        for (size_t i = 0; i < p.nmx; i++) {
            const char *m = p.mx[i];
            if (!m[0]) abort();
            for (const char *c = m; *c; c++)
                if (isupper((unsigned char)*c)) abort();
            if (m[0] != '*' && !sts_mx_match(m, m)) abort();
        }
        char host[256];
        size_t hl = 0;
        while (hl < size && hl < sizeof host - 1 && data[hl] != '\n' && data[hl] != '\0') {
            host[hl] = (char)data[hl];
            hl++;
        }
        host[hl] = '\0';
        (void)sts_policy_mx_allowed(&p, host);
        sts_policy_clear(&p);
    } else {
        if (!err || !err[0]) abort();
        free(err);
    }
    char id[STS_ID_MAX + 1];
    if (sts_txt_id(text, size, id, sizeof id) == 0) {
        size_t n = strlen(id);
        if (n < 1 || n > STS_ID_MAX) abort();
        for (size_t i = 0; i < n; i++)
            if (!isalnum((unsigned char)id[i])) abort();
    }
    return 0;
}
