/* fuzz_identity.c — fuzz target for the identity check's evaluators (mta/identity_eval.c,
 * mta/identity_spf.c) and reports (mta/identity_report.c), which read TXT and MX records
 * any domain owner (or a resolver on the path) can shape. The input's lines are the TXT
 * records of every name asked about and the MX hosts of the MAIL FROM domain; the first
 * line is also kiln's expected p= and one of the pool's IPs. Promises checked: every
 * record has a known status and a reason; something to publish is offered only when the
 * operator has something to do; "found" is bounded by IDENTITY_FOUND_MAX per record (plus
 * separators and an MX preference); the SES statuses are known values; the JSON and the
 * table are produced. Built as a libFuzzer target by `make fuzz` (clang) and as a corpus +
 * mutation replay in `make check` (gcc). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/identity_check.h"

#define FUZZ_IDENTITY_LINES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_identity_rec_ok(const identity_record *r, size_t nlines)
{
    if (r->status > IDENTITY_UNKNOWN || !r->reason || !r->reason[0] || !r->name || !r->type) abort();
    if (r->publish && r->status == IDENTITY_PUBLISHED) abort();
    if (r->publish && r->status == IDENTITY_TEMPFAIL) abort();
    if (r->found && strlen(r->found) > nlines * (IDENTITY_FOUND_MAX + 16)) abort();   /* + "65535 ", ", " */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = util_strndup((const char *)data, size);   /* a NUL ends the input early */
    char *lines[FUZZ_IDENTITY_LINES];
    identity_mx mx[FUZZ_IDENTITY_LINES];
    size_t n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && n < FUZZ_IDENTITY_LINES;
         l = strtok_r(NULL, "\n", &save)) {
        lines[n] = l;
        mx[n].host = l;
        mx[n].preference = (int)n;
        n++;
    }
    const char *first = n ? lines[0] : "";
    identity_answer txt = {IDENTITY_ANS_RECORDS, (const char *const *)lines, n, NULL, 0, NULL};
    identity_answer mxa = {IDENTITY_ANS_RECORDS, NULL, 0, mx, n, NULL};
    identity_answer none = {IDENTITY_ANS_NXDOMAIN, NULL, 0, NULL, 0, NULL};
    identity_dkim_selector sels[2] = {{"s1", "rsa", first}, {"e1", "ed25519", first}};
    const char *pool[3] = {"192.0.2.10", "2001:db8::25", first};
    identity_answer dkim[2] = {txt, txt};
    identity_check_req q = {"user@news.example.com", sels, 2, size % 2 == 0, "mail.example.com",
                            size % 3 == 0 ? first : NULL, "mta.example.test", pool, 3};
    identity_answers a = {dkim, mxa, txt, txt, size % 5 == 0 ? none : txt};
    identity_check_result *r = identity_check_assemble(&q, &a);
    if (r->nrecords != 5) abort();
    for (size_t i = 0; i < r->nrecords; i++) fuzz_identity_rec_ok(&r->records[i], n ? n : 1);
    if (r->dkim_status >= IDENTITY_SES_NOT_STARTED) abort();   /* two selectors: started */
    if (r->mail_from_status > IDENTITY_SES_TEMPORARY_FAILURE) abort();
    json_t *j = identity_check_to_json(r, NULL);
    char *dump = json_dumps(j, 0);
    if (!dump) abort();
    free(dump);
    json_decref(j);
    char *table = identity_check_to_text(r);
    if (!table[0]) abort();
    free(table);
    identity_check_result_free(r);
    free(text);
    return 0;
}
