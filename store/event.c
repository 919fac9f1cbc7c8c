/* event.c — the SES event records (SPEC section 4) built with jansson from a stored mail
 * object: Send, Reject, Delivery, Bounce, DeliveryDelay, Complaint, and the reporting MTA.
 * These are the records the spool's outbox stores and stats counts; they depend on nothing
 * above store/ (the mail object itself is built by mta/events.c at acceptance, with the
 * JSON helpers exported here).
 *
 * Promises: each builder takes the stored mail object, adds the ses:outgoing-ip tag when the
 * event has one, and wraps it with eventType and the per-type object; output is one compact
 * line, keys in SES order. A mail object that kiln wrote (its tags last, ending with
 * ses:caller-identity) is put in as the text it is, the tag spliced in before its end; any
 * other text is parsed and written again (event_load_mail) — the two give the same bytes
 * (jansson writes its own compact output back byte for byte; the golden tests hold both
 * paths to that). A damaged mail object never stops an event. Allocation failure is
 * fatal. */
#include "store/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* ------------------------------------------------------------------ JSON helpers ---- */

/* ------------------------------------------------------------------ JSON helpers ---- */

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0 if the bytes are not one. */
static size_t event_utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0], cp, min;
    size_t len;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* A JSON string for s. JSON needs UTF-8 while headers may carry raw 8-bit bytes of any
 * charset: bytes that are not valid UTF-8 become U+FFFD. */
json_t *event_jstr(const char *s)
{
    if (!s) s = "";
    json_t *j = json_string(s);
    if (j) return j;
    strbuf sb;
    strbuf_init(&sb);
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n) {
        size_t l = event_utf8_len(p, n);
        if (l) {
            strbuf_append(&sb, p, l);
            p += l, n -= l;
        } else {
            strbuf_puts(&sb, "\xef\xbf\xbd");
            p++, n--;
        }
    }
    j = json_string(sb.buf ? sb.buf : "");
    strbuf_free(&sb);
    if (!j) util_fatal("events: cannot make a JSON string (out of memory)");
    return j;
}

void event_jset(json_t *obj, const char *key, json_t *val)
{
    if (!val || json_object_set_new(obj, key, val) != 0)
        util_fatal("events: cannot set JSON key %s (out of memory)", key);
}

void event_jappend(json_t *arr, json_t *val)
{
    if (!val || json_array_append_new(arr, val) != 0)
        util_fatal("events: cannot append to a JSON array (out of memory)");
}

json_t *event_jobj(void)
{
    json_t *o = json_object();
    if (!o) util_fatal("events: cannot make a JSON object (out of memory)");
    return o;
}

json_t *event_jarr(void)
{
    json_t *a = json_array();
    if (!a) util_fatal("events: cannot make a JSON array (out of memory)");
    return a;
}

json_t *event_jint(int64_t v)
{
    json_t *j = json_integer((json_int_t)v);
    if (!j) util_fatal("events: cannot make a JSON integer (out of memory)");
    return j;
}

json_t *event_jtime(int64_t ms)
{
    char ts[32];
    util_iso8601(ms, ts);
    return event_jstr(ts);
}

json_t *event_jstr_array(char *const *v, size_t n)
{
    json_t *a = event_jarr();
    for (size_t i = 0; i < n; i++) event_jappend(a, event_jstr(v[i]));
    return a;
}


json_t *event_tag(const char *value)
{
    json_t *a = event_jarr();
    event_jappend(a, event_jstr(value));
    return a;
}

/* ------------------------------------------------------------------ events ---- */

typedef struct event_base {
    json_t *mail;
    char *error;        /* the stored mail object could not be read: said under "kiln" */
} event_base;

/* The stored mail object, with the ses:outgoing-ip tag when outgoing_ip is set. A stored
 * object that does not parse (a damaged spool row) must not stop the event: the mail object
 * is then empty and the event says why under "kiln" (SPEC: kiln may add its own fields). */
static event_base event_load_mail(const char *mail_json, const char *outgoing_ip)
{
    event_base b = {NULL, NULL};
    json_error_t jerr;
    memset(&jerr, 0, sizeof jerr);
    b.mail = json_loads(mail_json ? mail_json : "", JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(b.mail)) {
        b.error = util_asprintf("the stored mail object is not a JSON object: %s",
                                jerr.text[0] ? jerr.text : "wrong type");
        json_decref(b.mail);
        b.mail = event_jobj();
    }
    if (outgoing_ip) {
        json_t *tags = json_object_get(b.mail, "tags");
        if (!json_is_object(tags)) {
            tags = event_jobj();
            event_jset(b.mail, "tags", tags);
        }
        event_jset(tags, "ses:outgoing-ip", event_tag(outgoing_ip));
    }
    return b;
}

static char *event_finish(event_base b, const char *type, const char *key, json_t *body)
{
    json_t *ev = event_jobj();
    event_jset(ev, "eventType", event_jstr(type));
    event_jset(ev, "mail", b.mail);
    event_jset(ev, key, body);
    if (b.error) {
        json_t *k = event_jobj();
        event_jset(k, "error", event_jstr(b.error));
        event_jset(ev, "kiln", k);
        free(b.error);
    }
    char *s = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ev);
    if (!s) util_fatal("events: cannot encode a %s event", type);
    return s;
}

/* The end of every mail object kiln writes (mta/events.c: tags come last, and
 * ses:caller-identity is their last key). */
#define EVENT_MAIL_TAIL "\"ses:caller-identity\":[\"kiln\"]}}"

/* An outgoing IP that needs no JSON escaping (an address from the config: digits, hex,
 * dots, colons). */
static bool event_plain_ip(const char *ip)
{
    if (!*ip || strlen(ip) > 64) return false;
    for (const char *p = ip; *p; p++)
        if (!strchr("0123456789abcdefABCDEF.:", *p)) return false;
    return true;
}

/* The event built around the stored mail object's text (see the file comment), or NULL
 * when the text is not one kiln wrote: then the caller parses it (event_load_mail). Takes
 * body either way when it returns non-NULL; leaves it to the caller otherwise. */
static char *event_splice(const char *mail_json, const char *outgoing_ip, const char *type,
                          const char *key, json_t *body)
{
    size_t n = mail_json ? strlen(mail_json) : 0, tail = strlen(EVENT_MAIL_TAIL);
    if (n < tail + 1 || mail_json[0] != '{' || strcmp(mail_json + n - tail, EVENT_MAIL_TAIL))
        return NULL;
    if (outgoing_ip && !event_plain_ip(outgoing_ip)) return NULL;
    char *b = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!b) util_fatal("events: cannot encode a %s event", type);
    char *s = outgoing_ip
                  ? util_asprintf("{\"eventType\":\"%s\",\"mail\":%.*s,\"ses:outgoing-ip\":[\"%s\"]}},"
                                  "\"%s\":%s}",
                                  type, (int)(n - 2), mail_json, outgoing_ip, key, b)
                  : util_asprintf("{\"eventType\":\"%s\",\"mail\":%s,\"%s\":%s}", type, mail_json,
                                  key, b);
    free(b);
    return s;
}

/* The event of type around the stored mail object: spliced, or parsed and written again. */
static char *event_build(const char *mail_json, const char *outgoing_ip, const char *type,
                         const char *key, json_t *body)
{
    char *s = event_splice(mail_json, outgoing_ip, type, key, body);
    return s ? s : event_finish(event_load_mail(mail_json, outgoing_ip), type, key, body);
}

/* SES-style feedback ID: 16 hex digits of the time, a random UUID v4, "-000000". */
static json_t *event_feedback_id(int64_t ts_ms)
{
    char r[33], out[80];
    util_random_hex(r, 16);
    r[12] = '4';
    r[16] = "89ab"[(unsigned char)r[16] & 3];
    snprintf(out, sizeof out, "%016llx-%.8s-%.4s-%.4s-%.4s-%.12s-000000",
             (unsigned long long)ts_ms, r, r + 8, r + 12, r + 16, r + 20);
    return event_jstr(out);
}

static void event_set_opt(json_t *obj, const char *key, const char *v)
{
    if (v) event_jset(obj, key, event_jstr(v));
}

char *events_send(const char *mail_json)
{
    /* Every message has a Send event, built an instant after its mail object: the object is
     * put into the event as the text it is, not parsed and written again (jansson writes its
     * own compact output back byte for byte, so the result is the same; the golden tests
     * hold it to that). Text that is not an object takes the general path and its error. */
    size_t n = mail_json ? strlen(mail_json) : 0;
    if (n >= 2 && mail_json[0] == '{' && mail_json[n - 1] == '}')
        return util_asprintf("{\"eventType\":\"Send\",\"mail\":%s,\"send\":{}}", mail_json);
    return event_finish(event_load_mail(mail_json, NULL), "Send", "send", event_jobj());
}

char *events_reject(const char *mail_json, const char *reason)
{
    json_t *body = event_jobj();
    event_jset(body, "reason", event_jstr(reason));
    return event_build(mail_json, NULL, "Reject", "reject", body);
}

char *events_delivery(const char *mail_json, const char *outgoing_ip, int64_t ts_ms,
                      int64_t processing_ms, char *const *rcpts, size_t nrcpts,
                      const char *smtp_response, const char *reporting_mta,
                      const char *remote_mta_ip)
{
    json_t *body = event_jobj();
    event_jset(body, "timestamp", event_jtime(ts_ms));
    event_jset(body, "processingTimeMillis", event_jint(processing_ms));
    event_jset(body, "recipients", event_jstr_array(rcpts, nrcpts));
    event_set_opt(body, "smtpResponse", smtp_response);
    event_set_opt(body, "reportingMTA", reporting_mta);
    event_set_opt(body, "remoteMtaIp", remote_mta_ip);
    return event_build(mail_json, outgoing_ip, "Delivery", "delivery", body);
}

char *events_bounce(const char *mail_json, const char *outgoing_ip, int64_t ts_ms,
                    const char *bounce_type, const char *bounce_subtype,
                    const events_rcpt_status *rcpts, size_t nrcpts,
                    const char *reporting_mta, const char *remote_mta_ip)
{
    json_t *body = event_jobj();
    event_jset(body, "bounceType", event_jstr(bounce_type));
    event_jset(body, "bounceSubType", event_jstr(bounce_subtype));
    json_t *list = event_jarr();
    for (size_t i = 0; i < nrcpts; i++) {
        json_t *r = event_jobj();
        event_jset(r, "emailAddress", event_jstr(rcpts[i].email));
        event_jset(r, "action", event_jstr(rcpts[i].action ? rcpts[i].action : "failed"));
        event_set_opt(r, "status", rcpts[i].status);
        event_set_opt(r, "diagnosticCode", rcpts[i].diagnostic);
        event_jappend(list, r);
    }
    event_jset(body, "bouncedRecipients", list);
    event_jset(body, "timestamp", event_jtime(ts_ms));
    event_jset(body, "feedbackId", event_feedback_id(ts_ms));
    event_set_opt(body, "reportingMTA", reporting_mta);
    event_set_opt(body, "remoteMtaIp", remote_mta_ip);
    return event_build(mail_json, outgoing_ip, "Bounce", "bounce", body);
}

char *events_delay(const char *mail_json, const char *outgoing_ip, int64_t ts_ms,
                   const char *delay_type, int64_t expiration_ms,
                   const events_rcpt_status *rcpts, size_t nrcpts,
                   const char *reporting_mta, const char *remote_mta_ip)
{
    json_t *body = event_jobj();
    event_jset(body, "timestamp", event_jtime(ts_ms));
    event_jset(body, "delayType", event_jstr(delay_type));
    event_jset(body, "expirationTime", event_jtime(expiration_ms));
    json_t *list = event_jarr();
    for (size_t i = 0; i < nrcpts; i++) {
        json_t *r = event_jobj();
        event_jset(r, "emailAddress", event_jstr(rcpts[i].email));
        event_set_opt(r, "status", rcpts[i].status);
        event_set_opt(r, "diagnosticCode", rcpts[i].diagnostic);
        event_jappend(list, r);
    }
    event_jset(body, "delayedRecipients", list);
    event_set_opt(body, "reportingMTA", reporting_mta);
    event_set_opt(body, "remoteMtaIp", remote_mta_ip);
    return event_build(mail_json, outgoing_ip, "DeliveryDelay", "deliveryDelay", body);
}

char *events_complaint(const char *mail_json, int64_t ts_ms, char *const *rcpts, size_t nrcpts,
                       const char *feedback_type, const char *user_agent, int64_t arrival_ms)
{
    json_t *body = event_jobj();
    json_t *list = event_jarr();
    for (size_t i = 0; i < nrcpts; i++) {
        json_t *r = event_jobj();
        event_jset(r, "emailAddress", event_jstr(rcpts[i]));
        event_jappend(list, r);
    }
    event_jset(body, "complainedRecipients", list);
    event_jset(body, "timestamp", event_jtime(ts_ms));
    event_jset(body, "feedbackId", event_feedback_id(ts_ms));
    event_jset(body, "complaintSubType", json_null());
    event_set_opt(body, "complaintFeedbackType", feedback_type);
    event_set_opt(body, "userAgent", user_agent);
    event_jset(body, "arrivalDate", event_jtime(arrival_ms > 0 ? arrival_ms : ts_ms));
    return event_build(mail_json, NULL, "Complaint", "complaint", body);
}

char *events_reporting_mta(const config *cfg)
{
    return util_asprintf("dsn; %s", cfg->hostname);
}
