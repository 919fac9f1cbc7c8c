/* kiln-apiload.c — injects N messages through the SES v2 API's SendEmail (POST
 * /v2/email/outbound-emails) over C parallel keep-alive HTTP connections and reports what
 * happened, as kiln-loadgen does for SMTP: messages accepted (HTTP 200 with a MessageId),
 * accepted messages per second, latency percentiles from the request sent to the response
 * complete, rejections by "<status> <x-amzn-ErrorType>" and errors by libcurl's kind of
 * failure. The HTTP counterpart of kiln-loadgen, for comparing the two front doors.
 *
 *   kiln-apiload --url http://HOST:PORT -n N -c C [--size BYTES] [--region R]
 *       [--key-id ID --secret-file PATH] [--from ADDR] [--domains D] [--set NAME]
 *       [--content raw|simple] [--token-prefix P] [--json] [--timeout S] [--rate MSGS_PER_S]
 *
 * libcurl's multi interface drives C easy handles, each carrying one request at a time;
 * the multi handle keeps at most C connections (CURLMOPT_MAX_HOST_CONNECTIONS,
 * CURLMOPT_MAX_TOTAL_CONNECTIONS and CURLMOPT_MAXCONNECTS = C) and reuses them, so each
 * handle's next request goes out on an idle keep-alive connection. Requests are signed with
 * SigV4 by mta/sigv4.c's signing side (content-type, host and x-amz-date signed, the
 * payload hash of the body, the signing key derived once a day), which reproduces botocore's
 * and awscrt's Authorization headers byte for byte (test_sigv4); the real clients
 * themselves (aws CLI, boto3) are what the integration tests use. A load tool has to cost
 * far less than the server it measures: libcurl's own signer (CURLOPT_AWS_SIGV4) derives
 * the key chain anew for every request, and building each body through jansson's encoder
 * walked its 1.4 KB of base64 character by character; together they made this client cost
 * three times kiln-loadgen per message. The body is written directly instead (the base64
 * alphabet needs no escaping; the addresses and names are escaped by jansson). No
 * "Expect: 100-continue" (one round trip less per message, as the AWS SDKs do below their
 * threshold).
 *
 * Every one of the N messages is attempted once and ends as accepted, rejected (any other
 * HTTP answer, or a 200 without MessageId) or an error (no complete HTTP answer: curl's
 * error text is the kind). libcurl itself sends a request again only when a reused
 * connection turns out closed before a single byte of answer arrived (its dead-connection
 * check); kilnd closes only idle connections, so in a run that keeps them busy this does
 * not happen. --timeout bounds every request (connect included), so the run is bounded.
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
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "base/util.h"
#include "mta/sigv4.h"
#include "mta/smtp_parse.h"

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

typedef struct al_slot {             /* one easy handle, one request at a time */
    apiload *al;
    CURL *easy;
    int64_t msg;
    strbuf body;                     /* the request's JSON (CURLOPT_POSTFIELDS) */
    struct curl_slist *headers;      /* the request's headers, signature included */
    strbuf resp;
    char errtype[128];               /* x-amzn-ErrorType, up to its first ':' */
    char curl_err[CURL_ERROR_SIZE];
    bool busy;
} al_slot;

struct apiload {
    al_opts o;
    char *endpoint;                  /* url + AL_PATH */
    char *host;                      /* the URL's authority: the Host header, signed */
    char *secret;
    sigv4_keycache *kc;              /* the signing key of the day */
    char *json_from, *json_set;      /* FromEmailAddress and ConfigurationSetName as JSON */
    CURLM *multi;
    al_slot *slots;
    int busy;
    int64_t next_msg;
    uint64_t accepted, rejected, errors, connects;
    int64_t *lat_us;
    size_t nlat;
    al_tally rejected_by, errors_by;
    int64_t t_start_us, t_end_us;
    double tokens, burst;            /* --rate's bucket */
    int64_t refill_us;
    char run_id[17];
    strbuf msg;                      /* scratch: the message (raw) or text (simple) */
    int sigfd;
    bool interrupted;
};

static int64_t apiload_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

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

static void apiload_report(apiload *al)
{
    qsort(al->lat_us, al->nlat, sizeof *al->lat_us, apiload_cmp_i64);
    int64_t end = al->t_end_us > al->t_start_us ? al->t_end_us : apiload_now_us();
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
            "connections_opened", (json_int_t)al->connects);
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
        printf("connections opened: %llu\n", (unsigned long long)al->connects);
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
    strbuf rcpt;
    strbuf_init(&rcpt);
    apiload_append_rcpt(al, &rcpt, msg);
    apiload_json_str(sb, rcpt.buf, rcpt.len);
    strbuf_free(&rcpt);
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

/* The request's headers into s->headers: Content-Type, and with a secret Host, X-Amz-Date
 * and the SigV4 Authorization over them and the body. */
static void apiload_sign(apiload *al, al_slot *s)
{
    curl_slist_free_all(s->headers);
    s->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!s->headers) util_fatal("kiln-apiload: out of memory");
    if (!al->secret) return;
    char date[17];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y%m%dT%H%M%SZ", &tm);
    sigv4_header h[] = {{"content-type", "application/json"}, {"host", al->host},
                        {"x-amz-date", date}};
    sigv4_request r = {"POST", AL_PATH, "", h, 3, s->body.buf, s->body.len};
    char *authz = sigv4_sign(&r, AL_SIGNED_HEADERS, al->o.key_id, al->secret, date,
                             al->o.region, "ses", al->kc);
    char *lines[3] = {util_asprintf("Host: %s", al->host), util_asprintf("X-Amz-Date: %s", date),
                      util_asprintf("Authorization: %s", authz)};
    for (int i = 0; i < 3; i++) {
        struct curl_slist *l = curl_slist_append(s->headers, lines[i]);
        if (!l) util_fatal("kiln-apiload: out of memory");
        s->headers = l;
        free(lines[i]);
    }
    free(authz);
}

/* ---- transfers ---- */

static size_t apiload_on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    al_slot *s = arg;
    size_t n = size * nmemb;
    if (s->resp.len + n <= AL_MAX_RESPONSE) strbuf_append(&s->resp, p, n);
    return n;
}

/* Keeps x-amzn-ErrorType's value up to its first ':' (botocore reads it the same way). */
static size_t apiload_on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    al_slot *s = arg;
    size_t n = size * nmemb;
    static const char name[] = "x-amzn-errortype:";
    if (n > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
        const char *v = p + sizeof name - 1, *end = p + n;
        while (v < end && (*v == ' ' || *v == '\t')) v++;
        size_t k = 0;
        while (v + k < end && v[k] != ':' && v[k] != '\r' && v[k] != '\n' &&
               k < sizeof s->errtype - 1)
            k++;
        memcpy(s->errtype, v, k);
        s->errtype[k] = '\0';
    }
    return n;
}

static void apiload_slot_setup(apiload *al, al_slot *s)
{
    s->al = al;
    strbuf_init(&s->resp);
    strbuf_init(&s->body);
    s->easy = curl_easy_init();
    if (!s->easy) util_fatal("kiln-apiload: curl_easy_init failed");
    CURL *e = s->easy;
    long tmo = (long)(al->o.timeout * 1000);
    curl_easy_setopt(e, CURLOPT_URL, al->endpoint);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, tmo > 0 ? tmo : 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, tmo > 0 ? tmo : 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, apiload_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, apiload_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->curl_err);
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "kiln-apiload/" PACKAGE_VERSION);
}

static bool apiload_messages_left(const apiload *al)
{
    return al->next_msg < al->o.n && !al->interrupted;
}

/* Hands the next message to an idle slot. */
static void apiload_slot_start(apiload *al, al_slot *s)
{
    s->msg = al->next_msg++;
    apiload_request_body(al, s->msg, &s->body);
    apiload_sign(al, s);
    strbuf_reset(&s->resp);
    s->errtype[0] = '\0';
    s->curl_err[0] = '\0';
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body.buf);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body.len);
    CURLMcode mc = curl_multi_add_handle(al->multi, s->easy);
    if (mc != CURLM_OK)
        util_fatal("kiln-apiload: curl_multi_add_handle: %s", curl_multi_strerror(mc));
    s->busy = true;
    al->busy++;
}

/* True when the 200's body is a JSON object with a non-empty string MessageId. */
static bool apiload_has_message_id(const strbuf *resp)
{
    if (!resp->buf) return false;
    json_t *j = json_loadb(resp->buf, resp->len, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "MessageId"));
    bool ok = id && *id;
    json_decref(j);
    return ok;
}

/* A transfer ended: its outcome counted, the handle idle again. */
static void apiload_slot_done(apiload *al, al_slot *s, CURLcode res)
{
    curl_multi_remove_handle(al->multi, s->easy);
    s->busy = false;
    al->busy--;
    long nconn = 0;
    if (curl_easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK && nconn > 0)
        al->connects += (uint64_t)nconn;
    if (res != CURLE_OK) {
        al->errors++;
        apiload_tally_add(&al->errors_by, curl_easy_strerror(res));
    } else {
        long status = 0;
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200 && apiload_has_message_id(&s->resp)) {
            curl_off_t total = 0, pre = 0;
            curl_easy_getinfo(s->easy, CURLINFO_TOTAL_TIME_T, &total);
            curl_easy_getinfo(s->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
            al->accepted++;
            al->lat_us[al->nlat++] = total > pre ? (int64_t)(total - pre) : 0;
        } else {
            char key[160];
            if (status == 200)
                snprintf(key, sizeof key, "200 no MessageId");
            else
                snprintf(key, sizeof key, "%ld %s", status, s->errtype[0] ? s->errtype : "-");
            al->rejected++;
            apiload_tally_add(&al->rejected_by, key);
        }
    }
    al->t_end_us = apiload_now_us();
}

/* Reads a pending SIGINT/SIGTERM from the signalfd: no new messages from then on. */
static void apiload_check_signal(apiload *al)
{
    struct signalfd_siginfo si;
    while (read(al->sigfd, &si, sizeof si) == (ssize_t)sizeof si) al->interrupted = true;
}

/* A token of --rate's bucket (always one without --rate). */
static bool apiload_take_token(apiload *al)
{
    if (al->o.rate <= 0) return true;
    int64_t t = apiload_now_us();
    al->tokens += (double)(t - al->refill_us) / 1e6 * al->o.rate;
    if (al->tokens > al->burst) al->tokens = al->burst;
    al->refill_us = t;
    if (al->tokens < 1.0) return false;
    al->tokens -= 1.0;
    return true;
}

/* Starts the next messages on idle slots, as far as tokens go; true if any started. */
static bool apiload_fill(apiload *al)
{
    bool started = false;
    for (int i = 0; i < al->o.c && apiload_messages_left(al); i++) {
        if (al->slots[i].busy) continue;
        if (!apiload_take_token(al)) break;
        apiload_slot_start(al, &al->slots[i]);
        started = true;
    }
    return started;
}

static void apiload_run(apiload *al)
{
    al->t_start_us = al->refill_us = apiload_now_us();
    al->burst = al->o.rate / 50.0 > 1.0 ? al->o.rate / 50.0 : 1.0;
    al->tokens = 1.0;
    apiload_fill(al);
    while (al->busy > 0 || apiload_messages_left(al)) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(al->multi, &running);
        if (mc != CURLM_OK) util_fatal("kiln-apiload: curl_multi_perform: %s", curl_multi_strerror(mc));
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(al->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            char *priv = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
            al_slot *s = (al_slot *)priv;
            CURLcode res = m->data.result;   /* m is invalid after remove_handle */
            apiload_slot_done(al, s, res);
        }
        if (apiload_fill(al)) continue;      /* let curl send the new requests at once */
        if (al->busy == 0 && !apiload_messages_left(al)) break;
        int wait_ms = 1000;                  /* until the next token, when a slot waits */
        if (al->o.rate > 0 && apiload_messages_left(al) && al->busy < al->o.c) {
            double w = (1.0 - al->tokens) / al->o.rate * 1000.0;
            wait_ms = w < 1.0 ? 1 : w > 1000.0 ? 1000 : (int)w;
        }
        struct curl_waitfd extra = {.fd = al->sigfd, .events = CURL_WAIT_POLLIN};
        mc = curl_multi_poll(al->multi, &extra, 1, wait_ms, NULL);
        if (mc != CURLM_OK) util_fatal("kiln-apiload: curl_multi_poll: %s", curl_multi_strerror(mc));
        if (extra.revents) apiload_check_signal(al);
    }
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
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        util_fatal("kiln-apiload: curl_global_init failed");
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    al->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (al->sigfd < 0) util_fatal("kiln-apiload: signalfd: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);

    size_t ul = strlen(al->o.url);
    while (ul > 0 && al->o.url[ul - 1] == '/') ul--;
    al->endpoint = util_asprintf("%.*s%s", (int)ul, al->o.url, AL_PATH);
    const char *auth = strstr(al->o.url, "://");
    auth = auth ? auth + 3 : al->o.url;
    al->host = util_strndup(auth, strcspn(auth, "/?#"));
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
    al->multi = curl_multi_init();
    if (!al->multi) util_fatal("kiln-apiload: curl_multi_init failed");
    curl_multi_setopt(al->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)al->o.c);
    curl_multi_setopt(al->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)al->o.c);
    curl_multi_setopt(al->multi, CURLMOPT_MAXCONNECTS, (long)al->o.c);
    util_random_hex(al->run_id, 8);
    strbuf_init(&al->msg);
    al->lat_us = util_calloc((size_t)al->o.n, sizeof *al->lat_us);
    al->slots = util_calloc((size_t)al->o.c, sizeof *al->slots);
    for (int i = 0; i < al->o.c; i++) apiload_slot_setup(al, &al->slots[i]);

    apiload_run(al);
    apiload_report(al);
    int status = al->accepted + al->rejected > 0 ? 0 : 1;

    for (int i = 0; i < al->o.c; i++) {
        al_slot *s = &al->slots[i];
        if (s->busy) curl_multi_remove_handle(al->multi, s->easy);
        curl_easy_cleanup(s->easy);
        curl_slist_free_all(s->headers);
        strbuf_free(&s->body);
        strbuf_free(&s->resp);
    }
    curl_multi_cleanup(al->multi);
    curl_global_cleanup();
    close(al->sigfd);
    free(al->slots);
    free(al->lat_us);
    strbuf_free(&al->msg);
    apiload_tally_free(&al->rejected_by);
    apiload_tally_free(&al->errors_by);
    if (al->secret) memset(al->secret, 0, strlen(al->secret));
    free(al->secret);
    free(al->endpoint);
    free(al->host);
    free(al->json_from);
    free(al->json_set);
    sigv4_keycache_free(al->kc);
    free(al);
    return status;
}
