/* loadgen_report.c — kiln-loadgen's tallies (text key -> count: rejections by stage and
 * code, errors by kind, connection errors) and the end-of-run report: accepted messages per
 * second and latency percentiles (nearest rank, MAIL sent to the final 250), as text or as
 * JSON (jansson) with --json.
 *
 * When every rejection was one of the account's rules, as SES words them (554 "Email address
 * is not verified" to RCPT: a sandbox account; the same to MAIL or the message: the sender;
 * 454 "Daily message quota exceeded"; 454 "Maximum sending rate exceeded"; 554
 * "Configuration set does not exist"), the report's last line says so and what to do (JSON:
 * "why"; null otherwise), e.g. for kiln-loadgen's defaults against the shipped sandbox
 * conf/kiln.yaml:
 *     all 1000 rejected: the account is in sandbox mode, only verified recipients may receive
 *     (1000 x 554 5.7.1 ... Email address is not verified): use tools/loadtest.sh or
 *     conf/examples/loadtest.yaml for load tests
 * Judged from the reply texts alone, so it works against any server that answers as SES.
 *
 * And --record FILE: one line per accepted message, written (line-buffered) as its final
 * 250 is read, so a reader sees it at once and nothing is lost if the run is killed:
 *     <unix time in ms> <X-Loadgen-Token value> <queue id>
 * where the queue id is the last word of the final reply (kilnd's "250 2.0.0 Ok ID": the
 * ID of every event about the message), "-" when the reply has no text after the code.
 * Crash and soak tests (tests/soak) use it to know which messages were acknowledged. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/loadgen.h"

void loadgen_tally_add(lg_tally *t, const char *key, uint64_t n)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->v[i].key, key) == 0) {
            t->v[i].n += n;
            return;
        }
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 8;
        t->v = util_realloc(t->v, t->cap * sizeof *t->v);
    }
    t->v[t->n].key = util_strdup(key);
    t->v[t->n].n = n;
    t->n++;
}

void loadgen_tally_free(lg_tally *t)
{
    for (size_t i = 0; i < t->n; i++) free(t->v[i].key);
    free(t->v);
}

static int loadgen_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of the sorted latencies, in ms. */
static double loadgen_pct_ms(const loadgen *lg, double p)
{
    if (lg->nlat == 0) return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)lg->nlat);
    if (rank < 1) rank = 1;
    if (rank > lg->nlat) rank = lg->nlat;
    return (double)lg->lat_us[rank - 1] / 1000.0;
}

/* True when the len bytes at s contain needle. */
static bool loadgen_has(const char *s, size_t len, const char *needle)
{
    return memmem(s, len, needle, strlen(needle)) != NULL;
}

lg_why loadgen_why_of(lg_stage st, int code, const char *reply, size_t len)
{
    if (code == 554 && loadgen_has(reply, len, "Email address is not verified"))
        return st == STAGE_RCPT ? LG_WHY_SANDBOX : LG_WHY_SENDER;
    if (code == 454 && loadgen_has(reply, len, "Daily message quota exceeded")) return LG_WHY_QUOTA;
    if (code == 454 && loadgen_has(reply, len, "Maximum sending rate exceeded")) return LG_WHY_RATE;
    if (code == 554 && loadgen_has(reply, len, "Configuration set does not exist"))
        return LG_WHY_NO_SET;
    return LG_WHY_OTHER;
}

/* The report's last line when every rejection is an account rule (see the file comment);
 * NULL when there were none or some other refusal is among them. */
static char *loadgen_why_line(const loadgen *lg)
{
    static const struct {
        const char *reason, *reply;
    } what[LG_WHY_COUNT] = {
        [LG_WHY_SANDBOX] = {"the account is in sandbox mode, only verified recipients may receive",
                            "554 5.7.1 ... Email address is not verified"},
        [LG_WHY_SENDER] = {"the sender is not a verified identity (--from must be in "
                           "account.identities)", "554 5.7.1 ... Email address is not verified"},
        [LG_WHY_QUOTA] = {"the account's 24-hour sending quota is spent",
                          "454 4.7.0 ... Daily message quota exceeded"},
        [LG_WHY_RATE] = {"faster than the account's max_send_rate (see --rate)",
                         "454 4.7.0 ... Maximum sending rate exceeded"},
        [LG_WHY_NO_SET] = {"--set names no configuration set of the server",
                           "554 Configuration set does not exist"},
    };
    if (lg->rejected == 0 || lg->rejected_why[LG_WHY_OTHER] > 0) return NULL;
    strbuf sb;
    strbuf_init(&sb);
    if (lg->rejected == (uint64_t)lg->o.n)
        strbuf_printf(&sb, "all %llu rejected: ", (unsigned long long)lg->rejected);
    else
        strbuf_printf(&sb, "%llu of %lld rejected: ", (unsigned long long)lg->rejected, lg->o.n);
    bool account = false, first = true;
    for (int w = LG_WHY_OTHER + 1; w < LG_WHY_COUNT; w++) {
        if (lg->rejected_why[w] == 0) continue;
        strbuf_printf(&sb, "%s%s (%llu x %s)", first ? "" : "; ", what[w].reason,
                      (unsigned long long)lg->rejected_why[w], what[w].reply);
        first = false;
        account = account || w == LG_WHY_SANDBOX || w == LG_WHY_QUOTA || w == LG_WHY_RATE;
    }
    if (account)
        strbuf_puts(&sb, ": use tools/loadtest.sh or conf/examples/loadtest.yaml for load tests");
    return strbuf_steal(&sb);
}

static json_t *loadgen_tally_json(const lg_tally *t)
{
    json_t *o = json_object();
    for (size_t i = 0; i < t->n; i++)
        json_object_set_new(o, t->v[i].key, json_integer((json_int_t)t->v[i].n));
    return o;
}

static void loadgen_print_tally(const char *title, const lg_tally *t)
{
    if (t->n == 0) return;
    printf("%s", title);
    for (size_t i = 0; i < t->n; i++)
        printf("%s%s: %llu", i ? ", " : " ", t->v[i].key, (unsigned long long)t->v[i].n);
    printf("\n");
}

void loadgen_report(loadgen *lg)
{
    qsort(lg->lat_us, lg->nlat, sizeof *lg->lat_us, loadgen_cmp_i64);
    int64_t end = lg->t_end_us > lg->t_start_us ? lg->t_end_us : loadgen_now_us();
    double elapsed = (double)(end - lg->t_start_us) / 1e6;
    double rate = elapsed > 0 ? (double)lg->accepted / elapsed : 0;
    long long not_sent = lg->o.n - lg->next_msg;
    double lmax = lg->nlat ? (double)lg->lat_us[lg->nlat - 1] / 1000.0 : 0;
    char *why = loadgen_why_line(lg);
    if (lg->o.json) {
        json_t *root = json_pack(
            "{s:s, s:I, s:i, s:I, s:i, s:I, s:I, s:I, s:I, s:f, s:f, s:{s:f, s:f, s:f, s:f}, "
            "s:I, s:I}",
            "server", lg->o.server, "messages", (json_int_t)lg->o.n, "connections", lg->o.c,
            "size", (json_int_t)lg->o.size, "rcpts_per_msg", lg->o.rcpts,
            "accepted", (json_int_t)lg->accepted, "rejected", (json_int_t)lg->rejected,
            "errors", (json_int_t)lg->errors, "not_sent", (json_int_t)not_sent,
            "elapsed_s", elapsed, "accepted_per_s", rate,
            "latency_ms", "p50", loadgen_pct_ms(lg, 50), "p90", loadgen_pct_ms(lg, 90), "p99", loadgen_pct_ms(lg, 99),
            "max", lmax,
            "recipients_accepted", (json_int_t)lg->rcpts_ok,
            "recipients_rejected", (json_int_t)lg->rcpts_rejected);
        if (!root) util_fatal("kiln-loadgen: cannot build the JSON report");
        json_object_set_new(root, "rejected_by_code", loadgen_tally_json(&lg->rejected_by));
        json_object_set_new(root, "errors_by_kind", loadgen_tally_json(&lg->errors_by));
        json_object_set_new(root, "connection_errors", loadgen_tally_json(&lg->conn_errors));
        json_object_set_new(root, "interrupted", json_boolean(lg->interrupted));
        json_object_set_new(root, "why", why ? json_string(why) : json_null());
        char *text =
            json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        json_decref(root);
        if (!text) util_fatal("kiln-loadgen: cannot encode the JSON report");
        puts(text);
        free(text);
    } else {
        printf("kiln-loadgen: %lld messages to %s over %d connections, %lld bytes, %d "
               "recipient(s) each%s\n",
               lg->o.n, lg->o.server, lg->o.c, lg->o.size, lg->o.rcpts,
               lg->interrupted ? " (interrupted)" : "");
        printf("messages accepted: %llu (rejected %llu, errors %llu, not sent %lld)\n",
               (unsigned long long)lg->accepted, (unsigned long long)lg->rejected,
               (unsigned long long)lg->errors, not_sent);
        printf("accepted msgs/s: %.1f (%.3f s)\n", rate, elapsed);
        printf("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", loadgen_pct_ms(lg, 50),
               loadgen_pct_ms(lg, 90), loadgen_pct_ms(lg, 99), lmax);
        printf("recipients: %llu accepted, %llu rejected\n", (unsigned long long)lg->rcpts_ok,
               (unsigned long long)lg->rcpts_rejected);
        loadgen_print_tally("rejected by reply code:", &lg->rejected_by);
        loadgen_print_tally("errors:", &lg->errors_by);
        loadgen_print_tally("connection errors:", &lg->conn_errors);
        if (why) printf("%s\n", why);
    }
    free(why);
    fflush(stdout);
}

int loadgen_record_open(loadgen *lg)
{
    if (!lg->o.record) return 0;
    lg->record = fopen(lg->o.record, "a");
    if (!lg->record) {
        fprintf(stderr, "kiln-loadgen: --record %s: %s\n", lg->o.record, strerror(errno));
        return -1;
    }
    setvbuf(lg->record, NULL, _IOLBF, 0);
    return 0;
}

void loadgen_record_accepted(loadgen *lg, int64_t msg, const char *reply, size_t len)
{
    if (!lg->record) return;
    while (len && (reply[len - 1] == '\n' || reply[len - 1] == '\r' || reply[len - 1] == ' '))
        len--;
    size_t start = len;
    while (start && reply[start - 1] != ' ' && reply[start - 1] != '\n')
        start--;
    /* "250 ID": the word after the code; "250" alone (start at the code): no ID */
    bool has_id = start > 3 && len > start;
    if (fprintf(lg->record, "%lld %s-%lld %.*s\n", (long long)util_wall_ms(), lg->o.token_prefix,
                (long long)msg, has_id ? (int)(len - start) : 1,
                has_id ? reply + start : "-") < 0)
        fprintf(stderr, "kiln-loadgen: --record %s: %s\n", lg->o.record, strerror(errno));
}

void loadgen_record_close(loadgen *lg)
{
    if (lg->record) fclose(lg->record);
    lg->record = NULL;
}
