/* kiln-apiload.c — injects N messages through the SES v2 API's SendEmail (POST
 * /v2/email/outbound-emails) over C parallel keep-alive HTTP connections and reports what
 * happened, as kiln-loadgen does for SMTP: messages accepted (HTTP 200 with a MessageId),
 * accepted messages per second, latency percentiles from the request sent to the response
 * complete, rejections by "<status> <x-amzn-ErrorType>" and errors by their kind of
 * failure. The HTTP counterpart of kiln-loadgen, for comparing the two front doors.
 *
 *   kiln-apiload --url http://HOST:PORT -n N -c C [--size BYTES] [--region R]
 *       [--key-id ID --secret-file PATH] [--from ADDR] [--domains D] [--set NAME]
 *       [--content raw|simple] [--token-prefix P] [--json] [--timeout S] [--rate MSGS_PER_S]
 *
 * One libev loop drives C keep-alive connections (tools/apiload_http.c, over mta/conn), each
 * carrying one request at a time; a connection the server closed is opened again for the
 * next request. Requests are signed with SigV4 by mta/sigv4.c's signing side (content-type,
 * host and x-amz-date signed, the payload hash of the body, the signing key derived once a
 * day), which reproduces botocore's and awscrt's Authorization headers byte for byte
 * (test_sigv4); the real clients themselves (aws CLI, boto3) are what the integration tests
 * use. A load tool has to cost far less than the server it measures, and on the benchmark
 * machine the two share the cores: with libcurl's multi interface (and its signer, which
 * derives the key chain anew for every request) this client cost twice kiln-loadgen per
 * message, hence the HTTP client of apiload_http.c (its header says why in full). The body
 * is written directly, not through jansson's encoder (the base64 alphabet needs no
 * escaping; the sender and set names are escaped by jansson once). No
 * "Expect: 100-continue" (one round trip less per message, as the AWS SDKs do below their
 * threshold).
 *
 * Every one of the N messages is attempted once and ends as accepted, rejected (any other
 * HTTP answer, or a 200 without MessageId) or an error (no complete HTTP answer: the kind
 * of failure, such as "connect: Connection refused" or "connection closed before the
 * answer"). A request is sent again only when a reused connection turns out closed before
 * a single byte of answer arrived (as libcurl and the SDKs do); kilnd closes only idle
 * connections, so in a run that keeps them busy this does not happen. --timeout bounds every request (connect included), so the run is bounded.
 * --rate caps the requests started per second (all connections together: a token bucket
 * with a burst of 20 ms of requests, as kiln-loadgen's), for latency at a given load; the
 * latency counts from the request sent, not from its wait for a token.
 * SIGINT/SIGTERM stop handing out messages; those in flight finish and the report follows.
 *
 * Messages: --content raw (default) sends Content.Raw.Data, the base64 of an RFC 5322
 * message with From, To, Subject, Date, Message-ID, a unique "X-Loadgen-Token: P-<n>"
 * (n = 0..N-1), MIME-Version and Content-Type, its body of 76-character CRLF lines padding
 * the whole message to exactly --size bytes when the headers leave room (as
 * kiln-loadgen's). --content simple sends Content.Simple with the Subject
 * "kiln-apiload P-<n>" and a Text body padding subject and text together to --size bytes.
 * Message n goes to user<n>@d<n mod D>.test; --set NAME becomes ConfigurationSetName.
 *
 * Report: text, or with --json the keys of kiln-loadgen's report (server, messages,
 * connections, size, accepted, rejected, errors, not_sent, elapsed_s, accepted_per_s,
 * latency_ms {p50, p90, p99, max} by nearest rank, rejected_by_code, errors_by_kind,
 * interrupted) and content, connections_opened (keep-alive at work: C when every
 * connection lasted the run). Exit status 0 when the run finished (rejections and errors
 * included), 1 on bad usage or when no request got any HTTP answer.
 *
 * The tally and percentile code mirrors tools/loadgen_report.c; that file works on
 * kiln-loadgen's SMTP connection struct, so it is not linked here. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <ev.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "base/util.h"
#include "mta/sigv4.h"
#include "mta/smtp_parse.h"
#include "mta/tls.h"
#include "tools/apiload_http.h"

#define AL_LINE 76                   /* body line length without CRLF */
#define AL_MAX_RESPONSE (1 << 20)    /* bytes of one response body kept */
#define AL_PATH "/v2/email/outbound-emails"
#define AL_SIGNED_HEADERS "content-type;host;x-amz-date"

typedef struct al_opts {
    const char *url;                 /* http(s)://HOST:PORT, without the path */
    long long n;
    int c;
    long long size;
    const char *region;
    const char *key_id;
    const char *secret_file;
    const char *from;
    int domains;
    const char *set;
    bool simple;                     /* --content simple */
    const char *token_prefix;
    bool json;
    double timeout;
    double rate;                     /* --rate: requests started per second (0: no cap) */
} al_opts;

typedef struct al_count {
    char *key;
    uint64_t n;
} al_count;

typedef struct al_tally {            /* text key -> count, in first-seen order */
    al_count *v;
    size_t n, cap;
} al_tally;

typedef struct apiload apiload;

typedef struct al_slot {             /* one connection, one request at a time */
    apiload *al;
    ah_conn *hc;
    int64_t msg;
    strbuf req;                      /* the next request, handed to hc */
    bool busy;
} al_slot;

struct apiload {
    al_opts o;
    char *host;                      /* the URL's authority: the Host header, signed */
    char *server_name;               /* the URL's host name or address (SNI) */
    char *secret;
    sigv4_keycache *kc;              /* the signing key of the day */
    char *json_from, *json_set;      /* FromEmailAddress and ConfigurationSetName as JSON */
    struct ev_loop *loop;
    ah_target target;
    ev_timer rate_timer;
    ev_signal sigint, sigterm;
    al_slot *slots;
    int busy;
    int64_t next_msg;
    uint64_t accepted, rejected, errors;
    int64_t *lat_us;
    size_t nlat;
    al_tally rejected_by, errors_by;
    int64_t t_start_us, t_end_us;
    double tokens, burst;            /* --rate's bucket */
    int64_t refill_us;
    char run_id[17];
    strbuf msg;                      /* scratch: the message (raw) or text (simple) */
    strbuf body;                     /* scratch: the request's JSON */
    char date[17];                   /* x-amz-date of date_at */
    time_t date_at;
    bool interrupted;
};

/* ---- tallies and the report ---- */

static void apiload_tally_add(al_tally *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->v[i].key, key) == 0) {
            t->v[i].n++;
            return;
        }
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 8;
        t->v = util_realloc(t->v, t->cap * sizeof *t->v);
    }
    t->v[t->n].key = util_strdup(key);
    t->v[t->n].n = 1;
    t->n++;
}

static void apiload_tally_free(al_tally *t)
{
    for (size_t i = 0; i < t->n; i++) free(t->v[i].key);
    free(t->v);
}

static int apiload_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of the sorted latencies, in ms. */
static double apiload_pct_ms(const apiload *al, double p)
{
    if (al->nlat == 0) return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)al->nlat);
    if (rank < 1) rank = 1;
    if (rank > al->nlat) rank = al->nlat;
    return (double)al->lat_us[rank - 1] / 1000.0;
}

static json_t *apiload_tally_json(const al_tally *t)
{
    json_t *o = json_object();
    for (size_t i = 0; i < t->n; i++)
        json_object_set_new(o, t->v[i].key, json_integer((json_int_t)t->v[i].n));
    return o;
}

static void apiload_print_tally(const char *title, const al_tally *t)
{
    if (t->n == 0) return;
    printf("%s", title);
    for (size_t i = 0; i < t->n; i++)
        printf("%s%s: %llu", i ? ", " : " ", t->v[i].key, (unsigned long long)t->v[i].n);
    printf("\n");
}

static uint64_t apiload_connects(const apiload *al)
{
    uint64_t n = 0;
    for (int i = 0; i < al->o.c; i++) n += ah_conn_opened(al->slots[i].hc);
    return n;
}

static void apiload_report(apiload *al)
{
    qsort(al->lat_us, al->nlat, sizeof *al->lat_us, apiload_cmp_i64);
    int64_t end = al->t_end_us > al->t_start_us ? al->t_end_us : ah_now_us();
    double elapsed = (double)(end - al->t_start_us) / 1e6;
    double rate = elapsed > 0 ? (double)al->accepted / elapsed : 0;
    long long not_sent = al->o.n - al->next_msg;
    double lmax = al->nlat ? (double)al->lat_us[al->nlat - 1] / 1000.0 : 0;
    const char *content = al->o.simple ? "simple" : "raw";
    if (al->o.json) {
        json_t *root = json_pack(
            "{s:s, s:I, s:i, s:I, s:s, s:I, s:I, s:I, s:I, s:f, s:f, "
            "s:{s:f, s:f, s:f, s:f}, s:I}",
            "server", al->o.url, "messages", (json_int_t)al->o.n, "connections", al->o.c,
            "size", (json_int_t)al->o.size, "content", content,
            "accepted", (json_int_t)al->accepted, "rejected", (json_int_t)al->rejected,
            "errors", (json_int_t)al->errors, "not_sent", (json_int_t)not_sent,
            "elapsed_s", elapsed, "accepted_per_s", rate,
            "latency_ms", "p50", apiload_pct_ms(al, 50), "p90", apiload_pct_ms(al, 90),
            "p99", apiload_pct_ms(al, 99), "max", lmax,
            "connections_opened", (json_int_t)apiload_connects(al));
        if (!root) util_fatal("kiln-apiload: cannot build the JSON report");
        json_object_set_new(root, "rejected_by_code", apiload_tally_json(&al->rejected_by));
        json_object_set_new(root, "errors_by_kind", apiload_tally_json(&al->errors_by));
        json_object_set_new(root, "interrupted", json_boolean(al->interrupted));
        char *text =
            json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        json_decref(root);
        if (!text) util_fatal("kiln-apiload: cannot encode the JSON report");
        puts(text);
        free(text);
    } else {
        printf("kiln-apiload: %lld SendEmail requests (%s, %lld bytes) to %s over %d "
               "connections%s\n", al->o.n, content, al->o.size, al->o.url, al->o.c,
               al->interrupted ? " (interrupted)" : "");
        printf("messages accepted: %llu (rejected %llu, errors %llu, not sent %lld)\n",
               (unsigned long long)al->accepted, (unsigned long long)al->rejected,
               (unsigned long long)al->errors, not_sent);
        printf("accepted msgs/s: %.1f (%.3f s)\n", rate, elapsed);
        printf("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", apiload_pct_ms(al, 50),
               apiload_pct_ms(al, 90), apiload_pct_ms(al, 99), lmax);
        printf("connections opened: %llu\n", (unsigned long long)apiload_connects(al));
        apiload_print_tally("rejected by status and error type:", &al->rejected_by);
        apiload_print_tally("errors:", &al->errors_by);
    }
    fflush(stdout);
}

/* ---- message composition ---- */

/* One padding line of width characters (readable text, then letters) and CRLF. */
static void apiload_append_line(strbuf *sb, long long line, long long width)
{
    char buf[AL_LINE + 1];
    int hn = snprintf(buf, sizeof buf, "apiload padding line %03lld ", line % 1000);
    for (long long j = hn; j < AL_LINE; j++) buf[j] = (char)('a' + (line + j) % 26);
    strbuf_append(sb, buf, (size_t)width);
    strbuf_append(sb, "\r\n", 2);
}

/* Appends exactly len bytes (at least 2) of CRLF lines of at most AL_LINE characters: a
 * remainder of one byte makes the last full line two shorter ones. */
static void apiload_append_padding(strbuf *sb, long long len)
{
    const long long full = AL_LINE + 2;
    if (len <= 0) return;
    if (len < 2) len = 2;
    long long k = len / full, r = len % full, line = 0;
    if (r == 1) {
        k--;
        r = full + 1;
    }
    for (; line < k; line++) apiload_append_line(sb, line, AL_LINE);
    while (r > 0) {
        long long part = r > full ? r / 2 : r;   /* r == full + 1: 39 + 40 */
        apiload_append_line(sb, line++, part - 2);
        r -= part;
    }
}

static void apiload_append_rcpt(const apiload *al, strbuf *sb, int64_t msg)
{
    strbuf_printf(sb, "user%lld@d%lld.test", (long long)msg, (long long)(msg % al->o.domains));
}

/* The raw message of number msg into al->msg. */
static void apiload_compose_raw(apiload *al, int64_t msg)
{
    strbuf *sb = &al->msg;
    strbuf_reset(sb);
    char date[40];
    util_rfc5322_date(util_wall_ms(), date);
    const char *dom = util_addr_domain(al->o.from);
    strbuf_printf(sb, "From: <%s>\r\nTo: <", al->o.from);
    apiload_append_rcpt(al, sb, msg);
    strbuf_printf(sb,
                  ">\r\nSubject: kiln-apiload message %lld\r\n"
                  "Date: %s\r\n"
                  "Message-ID: <%s-%lld.%s@%s>\r\n"
                  "X-Loadgen-Token: %s-%lld\r\n"
                  "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
                  (long long)msg, date, al->o.token_prefix, (long long)msg, al->run_id,
                  *dom ? dom : "apiload.kiln.test", al->o.token_prefix, (long long)msg);
    apiload_append_padding(sb, al->o.size - (long long)sb->len);
}

/* s as a JSON string (quoted and escaped by jansson), appended to sb. */
static void apiload_json_str(strbuf *sb, const char *str, size_t n)
{
    json_t *j = json_stringn(str, n);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    if (!t) util_fatal("kiln-apiload: cannot encode \"%.*s\" as JSON", (int)n, str);
    strbuf_puts(sb, t);
    free(t);
    json_decref(j);
}

/* The SendEmail request body of message msg into sb: {"FromEmailAddress", "Destination":
 * {"ToAddresses": [rcpt]}, "Content": {"Raw": {"Data": base64}} or {"Simple": ...},
 * "ConfigurationSetName" with --set}. */
static void apiload_request_body(apiload *al, int64_t msg, strbuf *sb)
{
    strbuf_reset(sb);
    strbuf_puts(sb, "{\"FromEmailAddress\":");
    strbuf_puts(sb, al->json_from);
    strbuf_puts(sb, ",\"Destination\":{\"ToAddresses\":[");
    strbuf_puts(sb, "\"");                   /* user<n>@d<k>.test: nothing to escape */
    apiload_append_rcpt(al, sb, msg);
    strbuf_puts(sb, "\"");
    strbuf_puts(sb, "]},\"Content\":");
    if (al->o.simple) {
        char *subject = util_asprintf("kiln-apiload %s-%lld", al->o.token_prefix, (long long)msg);
        strbuf_reset(&al->msg);
        apiload_append_padding(&al->msg, al->o.size - (long long)strlen(subject));
        strbuf_puts(sb, "{\"Simple\":{\"Subject\":{\"Data\":");
        apiload_json_str(sb, subject, strlen(subject));
        strbuf_puts(sb, ",\"Charset\":\"UTF-8\"},\"Body\":{\"Text\":{\"Data\":");
        apiload_json_str(sb, al->msg.buf ? al->msg.buf : "", al->msg.len);
        strbuf_puts(sb, ",\"Charset\":\"UTF-8\"}}}}");
        free(subject);
    } else {
        apiload_compose_raw(al, msg);
        strbuf_puts(sb, "{\"Raw\":{\"Data\":\"");
        size_t b64 = 4 * ((al->msg.len + 2) / 3);
        strbuf_reserve(sb, b64 + 1);
        sb->len += (size_t)EVP_EncodeBlock((unsigned char *)sb->buf + sb->len,
                                           (const unsigned char *)al->msg.buf, (int)al->msg.len);
        sb->buf[sb->len] = '\0';
        strbuf_puts(sb, "\"}}");
    }
    if (al->json_set) {
        strbuf_puts(sb, ",\"ConfigurationSetName\":");
        strbuf_puts(sb, al->json_set);
    }
    strbuf_puts(sb, "}");
}

/* The whole HTTP request of message s->msg into s->req: the request line, Host,
 * Content-Type, with a secret X-Amz-Date and the SigV4 Authorization over them and the
 * body, Content-Length, then the body. */
static void apiload_build_request(apiload *al, al_slot *s)
{
    apiload_request_body(al, s->msg, &al->body);
    strbuf *r = &s->req;
    strbuf_reset(r);
    strbuf_printf(r, "POST " AL_PATH " HTTP/1.1\r\nHost: %s\r\nUser-Agent: kiln-apiload/"
                  PACKAGE_VERSION "\r\nContent-Type: application/json\r\n", al->host);
    if (al->secret) {
        time_t now = time(NULL);
        if (now != al->date_at) {            /* the x-amz-date of this second */
            struct tm tm;
            gmtime_r(&now, &tm);
            strftime(al->date, sizeof al->date, "%Y%m%dT%H%M%SZ", &tm);
            al->date_at = now;
        }
        sigv4_header h[] = {{"content-type", "application/json"}, {"host", al->host},
                            {"x-amz-date", al->date}};
        sigv4_request sr = {"POST", AL_PATH, "", h, 3, al->body.buf, al->body.len};
        char *authz = sigv4_sign(&sr, AL_SIGNED_HEADERS, al->o.key_id, al->secret, al->date,
                                 al->o.region, "ses", al->kc);
        strbuf_printf(r, "X-Amz-Date: %s\r\nAuthorization: %s\r\n", al->date, authz);
        free(authz);
    }
    strbuf_printf(r, "Content-Length: %zu\r\n\r\n", al->body.len);
    strbuf_append(r, al->body.buf, al->body.len);
}

static bool apiload_messages_left(const apiload *al)
{
    return al->next_msg < al->o.n && !al->interrupted;
}

/* True when a 200's body holds "MessageId" with a non-empty string value. kilnd's answer
 * is {"MessageId":"..."}: a look for the member, not a JSON parse, keeps the client cheap;
 * any other shape counts as "200 no MessageId". */
static bool apiload_has_message_id(const char *body, size_t len)
{
    static const char key[] = "\"MessageId\"";
    const char *p = memmem(body, len, key, sizeof key - 1);
    if (!p) return false;
    const char *e = body + len;
    p += sizeof key - 1;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    if (p == e || *p++ != ':') return false;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return e - p >= 3 && p[0] == '"' && p[1] != '"' && memchr(p + 1, '"', (size_t)(e - p - 1));
}

static void apiload_fill(apiload *al);

/* A request ended: its outcome counted, the slot idle, the next messages started. */
static void apiload_on_answer(void *arg, const ah_result *r)
{
    al_slot *s = arg;
    apiload *al = s->al;
    s->busy = false;
    al->busy--;
    if (r->error) {
        al->errors++;
        apiload_tally_add(&al->errors_by, r->error);
    } else if (r->a->status == 200 && apiload_has_message_id(r->body, r->a->body_len)) {
        al->accepted++;
        int64_t lat = ah_now_us() - r->sent_us;
        al->lat_us[al->nlat++] = lat > 0 ? lat : 0;
    } else {
        char key[160];
        if (r->a->status == 200)
            snprintf(key, sizeof key, "200 no MessageId");
        else
            snprintf(key, sizeof key, "%d %s", r->a->status,
                     r->a->errtype[0] ? r->a->errtype : "-");
        al->rejected++;
        apiload_tally_add(&al->rejected_by, key);
    }
    al->t_end_us = ah_now_us();
    apiload_fill(al);
    if (al->busy == 0 && !apiload_messages_left(al)) ev_break(al->loop, EVBREAK_ALL);
}

/* A token of --rate's bucket (always one without --rate). */
static bool apiload_take_token(apiload *al)
{
    if (al->o.rate <= 0) return true;
    int64_t t = ah_now_us();
    al->tokens += (double)(t - al->refill_us) / 1e6 * al->o.rate;
    if (al->tokens > al->burst) al->tokens = al->burst;
    al->refill_us = t;
    if (al->tokens < 1.0) return false;
    al->tokens -= 1.0;
    return true;
}

/* Starts the next messages on idle slots, as far as tokens go; without a token, the rate
 * timer comes back when the next one is due. */
static void apiload_fill(apiload *al)
{
    for (int i = 0; i < al->o.c && apiload_messages_left(al); i++) {
        al_slot *s = &al->slots[i];
        if (s->busy) continue;
        if (!apiload_take_token(al)) {
            if (!ev_is_active(&al->rate_timer)) {
                double w = (1.0 - al->tokens) / al->o.rate;
                ev_timer_set(&al->rate_timer, w > 0.0005 ? w : 0.0005, 0);
                ev_timer_start(al->loop, &al->rate_timer);
            }
            return;
        }
        s->msg = al->next_msg++;
        s->busy = true;
        al->busy++;
        apiload_build_request(al, s);
        ah_conn_send(s->hc, &s->req);
    }
}

static void apiload_on_rate_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    apiload *al = w->data;
    apiload_fill(al);
    if (al->busy == 0 && !apiload_messages_left(al)) ev_break(al->loop, EVBREAK_ALL);
}

/* SIGINT/SIGTERM: no new messages; those in flight finish and the report follows. */
static void apiload_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    apiload *al = w->data;
    al->interrupted = true;
    ev_timer_stop(loop, &al->rate_timer);
    if (al->busy == 0) ev_break(loop, EVBREAK_ALL);
}

static void apiload_run(apiload *al)
{
    al->t_start_us = al->refill_us = ah_now_us();
    al->burst = al->o.rate / 50.0 > 1.0 ? al->o.rate / 50.0 : 1.0;
    al->tokens = 1.0;
    apiload_fill(al);
    if (al->busy > 0 || apiload_messages_left(al)) ev_run(al->loop, 0);
}

/* ---- command line ---- */

static void apiload_usage(FILE *fp)
{
    fputs(
        "usage: kiln-apiload --url http://HOST:PORT -n N -c C [options]\n"
        "Sends N messages through the SES v2 API's SendEmail over C parallel keep-alive\n"
        "connections, signed with SigV4, and reports the results.\n"
        "\n"
        "      --url URL              the API's base URL (http://HOST:PORT or https://...)\n"
        "  -n, --messages N           messages to send (default 1000)\n"
        "  -c, --connections C        parallel requests and connections (default 10)\n"
        "      --size BYTES           raw message size, headers included; with --content\n"
        "                             simple, subject and text together (default 1024)\n"
        "      --region R             SigV4 region, kilnd's server.region (default local)\n"
        "      --key-id ID            access key id (api.access_keys)\n"
        "      --secret-file PATH     file holding the secret access key on one line\n"
        "                             (without --key-id and --secret-file: unsigned)\n"
        "      --from ADDR            FromEmailAddress and From: (loadgen@example.test)\n"
        "      --domains D            message n goes to user<n>@d<n mod D>.test (default 1)\n"
        "      --set NAME             ConfigurationSetName\n"
        "      --content raw|simple   Content.Raw (default) or Content.Simple\n"
        "      --token-prefix P       X-Loadgen-Token: P-<n> (simple: in the Subject;\n"
        "                             default apiload)\n"
        "      --json                 print the report as JSON\n"
        "      --timeout S            seconds one request may take, connect included (30)\n"
        "      --rate R               start at most R requests per second (default: no cap)\n"
        "  -h, --help                 this text\n"
        "Exit status 0 when the run finished (rejections included), 1 on bad usage or\n"
        "when no request got an HTTP answer.\n",
        fp);
}

enum {
    OPT_URL = 256, OPT_SIZE, OPT_REGION, OPT_KEY_ID, OPT_SECRET_FILE, OPT_FROM, OPT_DOMAINS,
    OPT_SET, OPT_CONTENT, OPT_TOKEN, OPT_JSON, OPT_TIMEOUT, OPT_RATE,
};

/* A region or token: a non-empty word of letters, digits, '-', '_' and '.'. */
static bool apiload_word_ok(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') || ('0' <= *s && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

/* Returns 0, or 1 after printing why the command line is wrong. */
static int apiload_parse_args(int argc, char **argv, al_opts *o, bool *help)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"messages", required_argument, NULL, 'n'},
        {"connections", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, OPT_SIZE},
        {"region", required_argument, NULL, OPT_REGION},
        {"key-id", required_argument, NULL, OPT_KEY_ID},
        {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
        {"from", required_argument, NULL, OPT_FROM},
        {"domains", required_argument, NULL, OPT_DOMAINS},
        {"set", required_argument, NULL, OPT_SET},
        {"content", required_argument, NULL, OPT_CONTENT},
        {"token-prefix", required_argument, NULL, OPT_TOKEN},
        {"json", no_argument, NULL, OPT_JSON},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"rate", required_argument, NULL, OPT_RATE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    o->n = 1000;
    o->c = 10;
    o->size = 1024;
    o->region = "local";
    o->from = "loadgen@example.test";
    o->domains = 1;
    o->token_prefix = "apiload";
    o->timeout = 30;
    int ch;
    long long ll;
    while ((ch = getopt_long(argc, argv, "n:c:h", longopts, NULL)) != -1) {
        const char *bad = NULL;
        switch (ch) {
        case OPT_URL:
            o->url = optarg;
            if ((strncmp(optarg, "http://", 7) != 0 && strncmp(optarg, "https://", 8) != 0) ||
                strpbrk(optarg, " \r\n?#"))
                bad = "--url wants http://HOST:PORT or https://HOST:PORT";
            break;
        case 'n':
            if (!util_parse_ll(optarg, 1, 100000000, &o->n)) bad = "-n wants 1..100000000";
            break;
        case 'c':
            if (!util_parse_ll(optarg, 1, 10000, &ll)) bad = "-c wants 1..10000";
            o->c = (int)ll;
            break;
        case OPT_SIZE:
            if (!util_parse_ll(optarg, 1, 40LL << 20, &o->size)) bad = "--size wants 1..41943040 bytes";
            break;
        case OPT_REGION:
            o->region = optarg;
            if (!apiload_word_ok(optarg)) bad = "--region wants a region name";
            break;
        case OPT_KEY_ID:
            o->key_id = optarg;
            if (!apiload_word_ok(optarg)) bad = "--key-id wants an access key id";
            break;
        case OPT_SECRET_FILE: o->secret_file = optarg; break;
        case OPT_FROM:
            o->from = optarg;
            if (!smtp_addr_valid(optarg) || strpbrk(optarg, "<>\" "))
                bad = "--from wants an address local@domain";
            break;
        case OPT_DOMAINS:
            if (!util_parse_ll(optarg, 1, 1000000, &ll)) bad = "--domains wants 1..1000000";
            o->domains = (int)ll;
            break;
        case OPT_SET:
            o->set = optarg;
            if (!*optarg) bad = "--set wants a configuration set name";
            break;
        case OPT_CONTENT:
            if (strcmp(optarg, "raw") == 0) o->simple = false;
            else if (strcmp(optarg, "simple") == 0) o->simple = true;
            else bad = "--content wants raw or simple";
            break;
        case OPT_TOKEN:
            o->token_prefix = optarg;
            if (!apiload_word_ok(optarg)) bad = "--token-prefix wants a word";
            break;
        case OPT_JSON: o->json = true; break;
        case OPT_TIMEOUT:
            if (!util_parse_double(optarg, 0.01, 86400, &o->timeout))
                bad = "--timeout wants seconds > 0";
            break;
        case OPT_RATE:
            if (!util_parse_double(optarg, 0.1, 10000000, &o->rate))
                bad = "--rate wants requests per second > 0";
            break;
        case 'h': *help = true; return 0;
        default:
            apiload_usage(stderr);
            return 1;
        }
        if (bad) {
            fprintf(stderr, "kiln-apiload: %s (got '%s')\n", bad, optarg);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kiln-apiload: unexpected argument '%s'\n", argv[optind]);
        return 1;
    }
    if (!o->url) {
        fprintf(stderr, "kiln-apiload: --url http://HOST:PORT is required\n");
        apiload_usage(stderr);
        return 1;
    }
    if (!o->key_id != !o->secret_file) {
        fprintf(stderr, "kiln-apiload: --key-id and --secret-file go together\n");
        return 1;
    }
    return 0;
}

/* The secret access key: the first line of path, without its line break. */
static char *apiload_read_secret(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "kiln-apiload: --secret-file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char buf[512];
    char *line = fgets(buf, sizeof buf, f);
    fclose(f);
    size_t n = line ? strcspn(buf, "\r\n") : 0;
    if (n == 0) {
        fprintf(stderr, "kiln-apiload: --secret-file %s: no secret on its first line\n", path);
        return NULL;
    }
    buf[n] = '\0';
    char *s = util_strdup(buf);
    memset(buf, 0, sizeof buf);
    return s;
}

/* The URL's authority (the Host header), its address (the first getaddrinfo gives) and,
 * for https, a client TLS context (the certificate is not verified, as kiln-loadgen's
 * --tls). Returns 0, or 1 after saying what is wrong. */
static int apiload_target(apiload *al)
{
    bool https = strncmp(al->o.url, "https://", 8) == 0;
    const char *auth = al->o.url + (https ? 8 : 7);
    al->host = util_strndup(auth, strcspn(auth, "/"));
    char *name = NULL;
    const char *port = https ? "443" : "80";
    const char *colon = NULL;
    if (al->host[0] == '[') {                  /* [v6]:port */
        const char *rb = strchr(al->host, ']');
        if (!rb || (rb[1] && rb[1] != ':')) {
            fprintf(stderr, "kiln-apiload: --url %s: bad [address]\n", al->o.url);
            return 1;
        }
        name = util_strndup(al->host + 1, (size_t)(rb - al->host - 1));
        colon = rb[1] ? rb + 1 : NULL;
    } else {
        colon = strrchr(al->host, ':');
        name = util_strndup(al->host, colon ? (size_t)(colon - al->host) : strlen(al->host));
    }
    if (colon) port = colon + 1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = *name && *port ? getaddrinfo(name, port, &hints, &res) : EAI_NONAME;
    if (gai != 0 || !res) {
        fprintf(stderr, "kiln-apiload: --url %s: cannot resolve '%s' port '%s': %s\n",
                al->o.url, name, port, gai_strerror(gai));
        free(name);
        return 1;
    }
    memcpy(&al->target.addr, res->ai_addr, res->ai_addrlen);
    al->target.addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    al->target.loop = al->loop;
    al->target.timeout = al->o.timeout;
    al->server_name = name;
    al->target.server_name = name;
    if (https) {
        char *err = NULL;
        al->target.tls = tls_client_ctx_new(false, &err);
        if (!al->target.tls) {
            fprintf(stderr, "kiln-apiload: TLS: %s\n", err ? err : "cannot set up");
            free(err);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    apiload *al = util_calloc(1, sizeof *al);
    bool help = false;
    int rc = apiload_parse_args(argc, argv, &al->o, &help);
    if (rc != 0 || help) {
        if (help) apiload_usage(stdout);
        free(al);
        return rc;
    }
    if (al->o.secret_file && !(al->secret = apiload_read_secret(al->o.secret_file))) {
        free(al);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    al->loop = ev_default_loop(EVFLAG_AUTO);
    if (!al->loop) util_fatal("kiln-apiload: cannot start the event loop");
    if (apiload_target(al) != 0) {
        free(al->secret);
        free(al);
        return 1;
    }
    ev_signal_init(&al->sigint, apiload_on_signal, SIGINT);
    ev_signal_init(&al->sigterm, apiload_on_signal, SIGTERM);
    al->sigint.data = al->sigterm.data = al;
    ev_signal_start(al->loop, &al->sigint);
    ev_signal_start(al->loop, &al->sigterm);
    ev_timer_init(&al->rate_timer, apiload_on_rate_timer, 0, 0);
    al->rate_timer.data = al;
    al->kc = sigv4_keycache_new(1);
    strbuf js;
    strbuf_init(&js);
    apiload_json_str(&js, al->o.from, strlen(al->o.from));
    al->json_from = strbuf_steal(&js);
    if (al->o.set) {
        apiload_json_str(&js, al->o.set, strlen(al->o.set));
        al->json_set = strbuf_steal(&js);
    }
    strbuf_free(&js);
    util_random_hex(al->run_id, 8);
    strbuf_init(&al->msg);
    strbuf_init(&al->body);
    al->lat_us = util_calloc((size_t)al->o.n, sizeof *al->lat_us);
    al->slots = util_calloc((size_t)al->o.c, sizeof *al->slots);
    for (int i = 0; i < al->o.c; i++) {
        al_slot *s = &al->slots[i];
        s->al = al;
        strbuf_init(&s->req);
        s->hc = ah_conn_new(&al->target, apiload_on_answer, s);
    }

    apiload_run(al);
    apiload_report(al);
    int status = al->accepted + al->rejected > 0 ? 0 : 1;

    for (int i = 0; i < al->o.c; i++) {
        ah_conn_free(al->slots[i].hc);
        strbuf_free(&al->slots[i].req);
    }
    if (al->target.tls) tls_ctx_free(al->target.tls);
    ev_loop_destroy(al->loop);
    free(al->slots);
    free(al->lat_us);
    strbuf_free(&al->msg);
    strbuf_free(&al->body);
    apiload_tally_free(&al->rejected_by);
    apiload_tally_free(&al->errors_by);
    if (al->secret) memset(al->secret, 0, strlen(al->secret));
    free(al->secret);
    free(al->host);
    free(al->server_name);
    free(al->json_from);
    free(al->json_set);
    sigv4_keycache_free(al->kc);
    free(al);
    return status;
}
