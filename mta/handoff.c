/* handoff.c — cross-zone handoff (promises in handoff.h): the credential and the
 * X-Kiln-Handoff field (pure), and the sender that moves an active job's message to a
 * peer node over SMTP (mta/smtp_client.c with AUTH PLAIN) and settles its recipients by
 * the peer's replies.
 *
 * The field: "X-Kiln-Handoff: v=1; node=N; id=ID; ms=CREATED; set=SET; mail=BASE64" where
 * BASE64 is the SES mail object as the first node stored it, folded over continuation lines
 * of at most 78 characters (the receiving side removes the blanks that unfolding leaves). */
#include "mta/handoff.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/auth.h"
#include "mta/cluster.h"
#include "mta/smtp_client.h"
#include "scheduler/job.h"

#define HANDOFF_NODE_MAX 64
#define HANDOFF_RETRY_MS 5000       /* a failed handoff is tried again this much later */
#define HANDOFF_CONNECT_MS 5000
#define HANDOFF_FOLD 76

/* ------------------------------------------------------------------ credential */

static bool handoff_node_ok(const char *node)
{
    size_t n = strlen(node);
    if (n == 0 || n > HANDOFF_NODE_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)node[i]) && node[i] != '-' && node[i] != '_') return false;
    return true;
}

static void handoff_password(const char *secret, const char *node, char out[65])
{
    unsigned char mac[32];
    unsigned int len = 0;
    char *msg = util_asprintf("kiln handoff %s", node);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, strlen(msg), mac,
         &len);
    free(msg);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
    OPENSSL_cleanse(mac, sizeof mac);
}

void handoff_credential(const char *secret, const char *node, char **user, char **auth_plain)
{
    char pass[65];
    handoff_password(secret, node, pass);
    *user = util_asprintf(HANDOFF_USER_PREFIX "%s", node);
    size_t ulen = strlen(*user), n = 1 + ulen + 1 + 64;
    char *raw = util_malloc(n);
    raw[0] = '\0';
    memcpy(raw + 1, *user, ulen);
    raw[1 + ulen] = '\0';
    memcpy(raw + 2 + ulen, pass, 64);
    *auth_plain = auth_b64_encode(raw, n);
    OPENSSL_cleanse(raw, n);
    OPENSSL_cleanse(pass, sizeof pass);
    free(raw);
}

bool handoff_check(const char *secret, const char *user, const char *pass, char node_out[72])
{
    size_t plen = strlen(HANDOFF_USER_PREFIX);
    if (!secret || !user || !pass || strncmp(user, HANDOFF_USER_PREFIX, plen) != 0) return false;
    const char *node = user + plen;
    if (!handoff_node_ok(node)) return false;
    char want[65];
    handoff_password(secret, node, want);
    bool ok = strlen(pass) == 64 && CRYPTO_memcmp(want, pass, 64) == 0;
    OPENSSL_cleanse(want, sizeof want);
    if (ok) snprintf(node_out, 72, "%s", node);
    return ok;
}

/* ------------------------------------------------------------------ the field */

char *handoff_header(const char *node, const char *id, int64_t created_ms, const char *set,
                     const char *mail_json)
{
    char *b64 = auth_b64_encode(mail_json, strlen(mail_json));
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, HANDOFF_HEADER ": v=1; node=%s;\r\n id=%s; ms=%lld;\r\n set=%s;\r\n mail=",
                  node, id, (long long)created_ms, set);
    size_t n = strlen(b64);
    for (size_t i = 0; i < n; i += HANDOFF_FOLD) {
        if (i) strbuf_puts(&sb, "\r\n ");
        strbuf_append(&sb, b64 + i, n - i < HANDOFF_FOLD ? n - i : HANDOFF_FOLD);
    }
    strbuf_puts(&sb, "\r\n");
    free(b64);
    return strbuf_steal(&sb);
}

static char *handoff_trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    return s;
}

static int handoff_fail(char **err, const char *what)
{
    *err = util_asprintf("bad " HANDOFF_HEADER ": %s", what);
    return -1;
}

int handoff_parse(const char *value, handoff_info *out, char **err)
{
    memset(out, 0, sizeof *out);
    char *copy = util_strdup(value), *save = NULL;
    bool v1 = false, have_ms = false;
    char *mail_b64 = NULL;
    for (char *part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(part, '=');
        if (!eq) continue;
        *eq = '\0';
        char *k = handoff_trim(part), *v = handoff_trim(eq + 1);
        if (strcmp(k, "v") == 0) {
            v1 = strcmp(v, "1") == 0;
        } else if (strcmp(k, "node") == 0 && handoff_node_ok(v)) {
            snprintf(out->node, sizeof out->node, "%s", v);
        } else if (strcmp(k, "id") == 0 && strlen(v) > 0 && strlen(v) < sizeof out->id) {
            bool ok = true;
            for (const char *p = v; *p; p++)
                if (!isalnum((unsigned char)*p) && *p != '-') ok = false;
            if (ok) memcpy(out->id, v, strlen(v) + 1);
        } else if (strcmp(k, "ms") == 0) {
            char *end = NULL;
            long long ms = strtoll(v, &end, 10);
            if (end && !*end && *v && ms > 0) {
                out->created_ms = ms;
                have_ms = true;
            }
        } else if (strcmp(k, "set") == 0 && handoff_node_ok(v)) {   /* a set's name: the
                                                                       same characters */
            free(out->set);
            out->set = util_strdup(v);
        } else if (strcmp(k, "mail") == 0) {
            free(mail_b64);
            mail_b64 = util_malloc(strlen(v) + 1);
            size_t w = 0;
            for (const char *p = v; *p; p++)       /* the blanks unfolding left */
                if (*p != ' ' && *p != '\t') mail_b64[w++] = *p;
            mail_b64[w] = '\0';
        }
    }
    free(copy);
    int rc = 0;
    if (!v1) rc = handoff_fail(err, "version is not 1");
    else if (!out->node[0]) rc = handoff_fail(err, "no valid node");
    else if (!out->id[0]) rc = handoff_fail(err, "no valid id");
    else if (!have_ms) rc = handoff_fail(err, "no valid ms");
    else if (!out->set) rc = handoff_fail(err, "no valid set");
    else if (!mail_b64) rc = handoff_fail(err, "no mail object");
    if (rc == 0) {
        size_t n = 0;
        char *json = auth_b64_decode(mail_b64, &n);
        json_t *o = json ? json_loadb(json, n, 0, NULL) : NULL;
        if (!json_is_object(o)) rc = handoff_fail(err, "the mail object is not base64 JSON");
        else out->mail_json = json;
        if (rc != 0) free(json);
        json_decref(o);
    }
    free(mail_b64);
    if (rc != 0) handoff_info_free(out);
    return rc;
}

void handoff_info_free(handoff_info *h)
{
    free(h->set);
    free(h->mail_json);
    h->set = h->mail_json = NULL;
}

char *handoff_tag_mail(const char *mail_json, const char *node)
{
    json_t *o = json_loads(mail_json, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    json_t *tags = json_object_get(o, "tags");
    if (!json_is_object(tags)) {
        tags = json_object();
        json_object_set_new(o, "tags", tags);
    }
    json_object_set_new(tags, HANDOFF_TAG, json_pack("[s]", node));
    char *out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return out;
}

/* ------------------------------------------------------------------ the sender */

typedef struct handoff_xfer {
    handoff *h;
    sched_job *j;
    smtp_client *cl;
    char *node;                 /* the peer */
    char *peer;                 /* "n2 (127.0.0.1:2587)" for logs and the spool */
    char *data;                 /* X-Kiln-Handoff + the stored message */
    size_t data_len;
    char **rcpts;
    smtp_client_msg m;
    bool settled;               /* the job's attempt is over */
    struct handoff_xfer *next, *prev;
} handoff_xfer;

struct handoff {
    kiln_ctx *ctx;
    scheduler *s;
    handoff_xfer *open;
    int nopen;
    bool quiet;                 /* no stop check: inside the stop op, or freeing */
};

handoff *handoff_new(kiln_ctx *ctx, scheduler *s)
{
    handoff *h = util_calloc(1, sizeof *h);
    h->ctx = ctx;
    h->s = s;
    return h;
}

static void handoff_xfer_free(handoff_xfer *x)
{
    handoff *h = x->h;
    if (x->prev) x->prev->next = x->next;
    else h->open = x->next;
    if (x->next) x->next->prev = x->prev;
    h->nopen--;
    smtp_client_free(x->cl);
    free(x->node);
    free(x->peer);
    free(x->data);
    free(x->rcpts);
    free(x);
    if (!h->quiet) sched_check_stop(h->s);
}

/* Every recipient not taken stays here, deferred (no usable IP: a pools wait), and is tried
 * again HANDOFF_RETRY_MS later; taken ones are final. results NULL: none was taken. */
static void handoff_settle(handoff_xfer *x, const smtp_client_rcpt_result *results,
                           const char *why)
{
    handoff *h = x->h;
    sched_job *j = x->j;
    if (x->settled) return;
    x->settled = true;
    sched_outcome *out = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *out);
    char **texts = util_calloc(j->nrcpts ? j->nrcpts : 1, sizeof *texts);
    size_t taken = 0;
    for (size_t i = 0; i < j->nrcpts; i++) {
        const smtp_client_rcpt_result *r = results ? &results[i] : NULL;
        if (r && r->status == SMTP_CLIENT_OK && r->reply.code / 100 == 2) {
            out[i].cls.verdict = RETRY_HANDOFF;
            texts[i] = util_asprintf("handed off to node %s: %s", x->node, r->reply.line);
            taken++;
        } else {
            retry_classify_failure(RETRY_FAIL_IP, &out[i].cls);
            const char *reason = r && r->reply.line ? r->reply.line : why;
            texts[i] = util_asprintf("no usable IP here; handoff to node %s failed: %s", x->node,
                                     reason ? reason : "no reply");
        }
        out[i].text = texts[i];
    }
    if (taken < j->nrcpts) {
        j->pool_wait = true;
        j->defer_at_ms = kiln_now_ms(h->ctx) + HANDOFF_RETRY_MS;
    }
    log_write(h->ctx->log, taken ? KLOG_INFO : KLOG_WARNING, "cluster.handoff",
              "id=%s to=%s rcpts=%zu taken=%zu%s%s", log_q(h->ctx->log, j->msg_id),
              log_q(h->ctx->log, x->node), j->nrcpts, taken, why ? " error=" : "",
              why ? log_q(h->ctx->log, why) : "");
    size_t n = j->nrcpts;               /* sched_settle takes the final ones out */
    sched_settle(h->s, j, out, NULL, x->peer);
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(out);
    sched_job_done(h->s, j);
}

static void handoff_on_client(void *arg, smtp_client *c, const smtp_client_event *ev)
{
    handoff_xfer *x = arg;
    (void)c;
    switch (ev->type) {
    case SMTP_CLIENT_EV_READY: {
        smtp_client_status why;
        char *err = NULL;
        if (smtp_client_send(x->cl, &x->m, &why, &err) != 0) {
            handoff_settle(x, NULL, err);
            free(err);
            smtp_client_quit(x->cl);
        }
        return;
    }
    case SMTP_CLIENT_EV_DONE:
        handoff_settle(x, ev->rcpts, NULL);
        smtp_client_quit(x->cl);
        return;
    case SMTP_CLIENT_EV_CLOSED:
        if (!x->settled) handoff_settle(x, NULL, ev->error ? ev->error : "the connection closed");
        handoff_xfer_free(x);
        return;
    }
}

bool handoff_take(handoff *h, sched_job *j, const char *why)
{
    kiln_ctx *ctx = h->ctx;
    const char *secret = cluster_secret(ctx->cluster);
    if (!ctx->cluster || !secret || !j->loaded || !j->pool || j->nrcpts == 0) return false;
    char *node = NULL, *host = NULL;
    int port = 0;
    if (cluster_pick_peer(ctx->cluster, j->pool, &node, &host, &port) != 0) return false;

    handoff_xfer *x = util_calloc(1, sizeof *x);
    x->h = h;
    x->j = j;
    x->node = node;
    x->peer = util_asprintf("node %s (%s:%d)", node, host, port);
    char *hdr = handoff_header(ctx->cfg->cluster_node, j->msg_id, j->msg.created_ms,
                               j->set->name, j->msg.mail_json ? j->msg.mail_json : "{}");
    size_t hl = strlen(hdr);
    x->data_len = hl + j->msg.data_len;
    x->data = util_malloc(x->data_len + 1);
    memcpy(x->data, hdr, hl);
    memcpy(x->data + hl, j->msg.data, j->msg.data_len);
    x->data[x->data_len] = '\0';
    free(hdr);
    x->rcpts = util_calloc(j->nrcpts, sizeof *x->rcpts);
    for (size_t i = 0; i < j->nrcpts; i++) x->rcpts[i] = j->rcpts[i].address;
    x->m = (smtp_client_msg){
        .id = j->msg_id,
        .mail_from = j->msg.mail_from ? j->msg.mail_from : "",
        .rcpts = x->rcpts,
        .nrcpts = j->nrcpts,
        .data = x->data,
        .data_len = x->data_len,
    };
    char *user = NULL, *plain = NULL;
    handoff_credential(secret, ctx->cfg->cluster_node, &user, &plain);
    smtp_client_opts o = {
        .peer_ip = host,
        .port = port,
        .peer_name = node,
        .ehlo_name = ctx->cfg->hostname,
        .self_name = NULL,          /* every node has the same hostname: not a loop */
        .tls = NULL,
        .auth_plain = plain,
    };
    smtp_client_default_timeouts(&o.timeouts, HANDOFF_CONNECT_MS);
    x->next = h->open;
    if (h->open) h->open->prev = x;
    h->open = x;
    h->nopen++;
    log_write(ctx->log, KLOG_INFO, "cluster.handoff_start",
              "id=%s pool=%s rcpts=%zu to=%s reason=%s", log_q(ctx->log, j->msg_id), j->pool,
              j->nrcpts, log_q(ctx->log, x->peer), log_q(ctx->log, why));
    x->cl = smtp_client_new(ctx->loop, ctx->log, &o, handoff_on_client, x);
    OPENSSL_cleanse(plain, strlen(plain));
    free(plain);
    free(user);
    free(host);
    return true;
}

void handoff_stop(handoff *h)
{
    /* unfinished transfers go back to the queue (the scheduler's stop counts the rest);
     * a peer that committed without our seeing its 250 answers the next attempt 250
     * again (it holds the id) */
    bool was = h->quiet;
    h->quiet = true;
    for (handoff_xfer *x = h->open, *nx; x; x = nx) {
        nx = x->next;
        if (x->settled) continue;
        x->settled = true;
        sched_job_release(h->s, x->j);
        handoff_xfer_free(x);
    }
    h->quiet = was;
}

int handoff_open(const handoff *h)
{
    return h ? h->nopen : 0;
}

void handoff_free(handoff *h)
{
    if (!h) return;
    h->quiet = true;
    handoff_stop(h);
    while (h->open) handoff_xfer_free(h->open);
    free(h);
}
