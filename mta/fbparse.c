/* fbparse.c — what a feedback message says (see mta/fbparse.h for the contract): the MIME
 * side, on GMime 3, and the decision between DSN, ARF, automatic reply and none.
 *
 * Order of the decision: the size limit; a pre-scan of the raw bytes that bounds the work
 * GMime may do (container parts and boundary-like lines, counted before GMime builds a tree
 * of objects for them); GMime's parse; a walk of the tree that counts parts and depth
 * against the limits and finds the report parts outside the quoted original; then
 *   1. a multipart/report (or a message/delivery-status / message/feedback-report part
 *      anywhere outside the original): DSN or ARF, MALFORMED when the part it announces is
 *      missing, empty, truncated or over a limit — a DSN always wins over the autoreply
 *      heuristics (DSNs carry Auto-Submitted: auto-replied);
 *   2. a non-standard bounce by shape (Exim, qmail, Yahoo: mta/fbparse_shapes.c), only
 *      from the null sender or a mailer-daemon/postmaster From (a spoofed "bounce" from an
 *      ordinary sender must not suppress an address);
 *   3. an automatic reply (mta/fbparse_shapes.c);
 *   4. none.
 * GMime 3.2 gives message/delivery-status as a plain GMimePart (checked with a Postfix
 * bounce); a GMimeMessagePart (other versions treat message/ as message-like) is handled
 * too, by writing its message back out as text and reading the field blocks from it.
 * No global state of ours; GMime's own is set up once by g_mime_init (fbparse_init). */
#include "mta/fbparse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>   /* and glib: clean under -std=c11 -Wall -Wextra (checked) */

#include "base/util.h"
#include "mta/fbparse_int.h"

void fbparse_default_limits(fbparse_limits *l)
{
    l->max_bytes = 10u * 1024 * 1024;
    l->max_depth = 8;
    l->max_parts = 100;
    l->max_recipients = 100;
    l->max_field = 998;
}

void fbparse_init(void)
{
    g_mime_init();   /* counts its calls: a second call returns at once */
}

int64_t fbparse_date_ms(const char *date)
{
    if (!date || !*date) return -1;
    GDateTime *dt = g_mime_utils_header_decode_date(date);
    if (!dt) return -1;
    int64_t ms = (int64_t)g_date_time_to_unix(dt) * 1000 + g_date_time_get_microsecond(dt) / 1000;
    g_date_time_unref(dt);
    return ms;
}

const char *fbparse_kind_name(fbparse_kind k)
{
    switch (k) {
    case FBPARSE_DSN: return "DSN";
    case FBPARSE_ARF: return "ARF";
    case FBPARSE_AUTOREPLY: return "autoreply";
    case FBPARSE_MALFORMED: return "malformed";
    case FBPARSE_NONE: break;
    }
    return "none";
}

void fbparse_report_free(fbparse_report *r)
{
    if (!r) return;
    free(r->why);
    free(r->shape);
    free(r->reporting_mta);
    free(r->arrival_date);
    for (size_t i = 0; i < r->nrcpts; i++) {
        free(r->rcpts[i].address);
        free(r->rcpts[i].action);
        free(r->rcpts[i].status);
        free(r->rcpts[i].diagnostic);
        free(r->rcpts[i].remote_mta);
    }
    free(r->rcpts);
    free(r->feedback_type);
    free(r->user_agent);
    free(r->arf_arrival_date);
    free(r->original_mail_from);
    for (size_t i = 0; i < r->noriginal_rcpt_to; i++) free(r->original_rcpt_to[i]);
    free(r->original_rcpt_to);
    free(r->source_ip);
    free(r->orig_message_id);
    free(r->orig_return_path);
    free(r->orig_kiln_message_id);
    free(r->orig_feedback_id);
    free(r->orig_from);
    free(r->orig_to);
    memset(r, 0, sizeof *r);
}

/* Sets the outcome; MALFORMED keeps nothing else (no half-read recipients to act on). */
static fbparse_kind fbparse_done(fbparse_report *out, fbparse_kind kind, char *why)
{
    if (kind == FBPARSE_MALFORMED) fbparse_report_free(out);
    free(out->why);
    out->kind = kind;
    out->why = why;
    return kind;
}

/* Bounds GMime's work before it runs: parts that contain parts (multipart/, message/) and
 * lines that could be boundaries ("--..."), counted over the raw bytes. Both over-count
 * (a quoted Content-Type counts too), so the bounds are generous multiples. */
static char *fbparse_prescan(const char *m, size_t len, const fbparse_limits *l)
{
    size_t containers = 0, delims = 0;
    const char *end = m + len;
    for (const char *p = m; p < end;) {
        size_t left = (size_t)(end - p);
        if (left >= 2 && p[0] == '-' && p[1] == '-') {
            delims++;
        } else if (left > 13 && strncasecmp(p, "Content-Type", 12) == 0) {
            const char *q = p + 12;
            while (q < end && (*q == ' ' || *q == '\t')) q++;
            if (q < end && *q == ':') {
                q++;
                while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) q++;
                if (((size_t)(end - q) >= 10 && strncasecmp(q, "multipart/", 10) == 0) ||
                    ((size_t)(end - q) >= 8 && strncasecmp(q, "message/", 8) == 0))
                    containers++;
            }
        }
        const char *nl = memchr(p, '\n', left);
        p = nl ? nl + 1 : end;
    }
    if (containers > (size_t)l->max_parts)
        return util_asprintf("more than %d MIME parts (the limit): %zu multipart/ or message/ "
                             "parts", l->max_parts, containers);
    if (delims > 4 * (size_t)l->max_parts + 16)
        return util_asprintf("more than %d MIME parts (the limit): %zu boundary lines",
                             l->max_parts, delims);
    return NULL;
}

typedef struct fbparse_walk {
    const fbparse_limits *l;
    int parts;
    char *over;                   /* the limit broken, or NULL */
    GMimeObject *report;          /* the first multipart/report outside the original */
    GMimeObject *status;          /* message/delivery-status (GMimePart or GMimeMessagePart) */
    GMimeObject *feedback;        /* message/feedback-report */
    GMimeObject *original;        /* message/rfc822, text/rfc822-headers and their global kin */
    GMimeObject *text;            /* the first text/plain outside the original */
    bool truncated;               /* GMime: the message ends inside a multipart */
    bool nesting;                 /* GMime: its own nesting limit */
} fbparse_walk;

static void fbparse_warning(gint64 offset, GMimeParserWarning code, const gchar *item,
                            gpointer arg)
{
    (void)offset, (void)item;
    fbparse_walk *w = arg;
    if (code == GMIME_WARN_TRUNCATED_MESSAGE) w->truncated = true;
    if (code == GMIME_CRIT_NESTING_OVERFLOW) w->nesting = true;
}

static bool fbparse_is(GMimeContentType *ct, const char *type, const char *subtype)
{
    return ct && g_mime_content_type_is_type(ct, type, subtype);
}

static void fbparse_walk_object(fbparse_walk *w, GMimeObject *o, int depth, bool in_original)
{
    if (!o || w->over) return;
    if (++w->parts > w->l->max_parts) {
        w->over = util_asprintf("more than %d MIME parts (the limit)", w->l->max_parts);
        return;
    }
    if (depth > w->l->max_depth) {
        w->over = util_asprintf("MIME nesting deeper than %d (the limit)", w->l->max_depth);
        return;
    }
    GMimeContentType *ct = g_mime_object_get_content_type(o);
    bool status = fbparse_is(ct, "message", "delivery-status") ||
                  fbparse_is(ct, "message", "global-delivery-status");
    bool original = fbparse_is(ct, "message", "rfc822") || fbparse_is(ct, "message", "global") ||
                    fbparse_is(ct, "text", "rfc822-headers") ||
                    fbparse_is(ct, "message", "global-headers");
    if (!in_original) {
        if (status && !w->status) w->status = o;
        if (fbparse_is(ct, "message", "feedback-report") && !w->feedback) w->feedback = o;
        if (original && !w->original) w->original = o;
        if (fbparse_is(ct, "multipart", "report") && !w->report) w->report = o;
        if (fbparse_is(ct, "text", "plain") && GMIME_IS_PART(o) && !w->text) w->text = o;
    }
    if (GMIME_IS_MULTIPART(o)) {
        GMimeMultipart *mp = (GMimeMultipart *)o;
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n && !w->over; i++)
            fbparse_walk_object(w, g_mime_multipart_get_part(mp, i), depth + 1, in_original);
    } else if (GMIME_IS_MESSAGE_PART(o)) {
        GMimeMessage *m = g_mime_message_part_get_message((GMimeMessagePart *)o);
        if (m)
            fbparse_walk_object(w, g_mime_message_get_mime_part(m), depth + 1,
                                in_original || original || status);
    }
}

/* The decoded content of a leaf part, or the text of a message part, NUL-terminated. */
static char *fbparse_content(GMimeObject *o, size_t *len)
{
    GMimeStream *s = g_mime_stream_mem_new();
    if (GMIME_IS_PART(o)) {
        GMimeDataWrapper *dw = g_mime_part_get_content((GMimePart *)o);
        if (dw) g_mime_data_wrapper_write_to_stream(dw, s);
    } else if (GMIME_IS_MESSAGE_PART(o)) {
        GMimeMessage *m = g_mime_message_part_get_message((GMimeMessagePart *)o);
        if (m) g_mime_object_write_to_stream((GMimeObject *)m, NULL, s);
    }
    GByteArray *ba = g_mime_stream_mem_get_byte_array((GMimeStreamMem *)s);
    *len = ba ? ba->len : 0;
    char *text = util_malloc(*len + 1);
    if (*len) memcpy(text, ba->data, *len);
    text[*len] = '\0';
    g_object_unref(s);
    return text;
}

/* A GMime header list as a block: decoded values (top) or raw ones unfolded (original). */
static void fbparse_headers(GMimeObject *o, bool raw, size_t max_field, fbparse_block *b)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(o);
    int n = hl ? g_mime_header_list_get_count(hl) : 0;
    for (int i = 0; i < n; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        const char *name = g_mime_header_get_name(h);
        const char *v = raw ? g_mime_header_get_raw_value(h) : g_mime_header_get_value(h);
        if (!v) v = g_mime_header_get_raw_value(h);
        if (name) fbparse_block_add(b, name, v ? v : "", v ? strlen(v) : 0, max_field);
    }
}

static void fbparse_original(GMimeObject *o, size_t max_field, fbparse_report *out)
{
    fbparse_block b = {0};
    if (GMIME_IS_MESSAGE_PART(o)) {
        GMimeMessage *m = g_mime_message_part_get_message((GMimeMessagePart *)o);
        if (m) fbparse_headers((GMimeObject *)m, true, max_field, &b);
    } else {
        size_t len;
        char *text = fbparse_content(o, &len);
        fbparse_block *bs;
        bool over;
        size_t n = fbparse_blocks(text, len, max_field, 1, &bs, &over);
        if (n) b = bs[0];
        for (size_t i = 1; i < n; i++) fbparse_block_free(&bs[i]);
        free(bs);
        free(text);
    }
    fbparse_orig_headers(&b, out);
    fbparse_block_free(&b);
}

static const char *fbparse_dsn_shape(const fbparse_block *top, const fbparse_report *out)
{
    const char *rm = out->reporting_mta, *from = fbparse_block_get(top, "From");
    if (fbparse_contains_ci(rm, "google") || fbparse_contains_ci(from, "googlemail.com") ||
        fbparse_contains_ci(from, "@google.com"))
        return "gmail";
    for (size_t i = 0; i < top->n; i++)
        if (strncasecmp(top->f[i].name, "X-MS-Exchange-", 14) == 0) return "exchange";
    if (fbparse_contains_ci(rm, "outlook.com")) return "exchange";
    if (fbparse_contains_ci(rm, "yahoo")) return "yahoo";
    return "rfc3464";
}

/* Step 1: the report parts. Returns the kind, or FBPARSE_NONE to go on. */
static fbparse_kind fbparse_report_parts(fbparse_walk *w, const fbparse_block *top,
                                         fbparse_report *out)
{
    const char *rt = NULL;
    if (w->report) {
        GMimeContentType *ct = g_mime_object_get_content_type(w->report);
        rt = ct ? g_mime_content_type_get_parameter(ct, "report-type") : NULL;
    }
    bool want_dsn = rt ? (strcasecmp(rt, "delivery-status") == 0 ||
                          strcasecmp(rt, "global-delivery-status") == 0)
                       : (w->status != NULL);
    bool want_arf = rt ? strcasecmp(rt, "feedback-report") == 0
                       : (!w->status && w->feedback != NULL);
    if (!want_dsn && !want_arf) {
        if (w->report)
            out->why = util_asprintf("multipart/report; report-type=%s is neither a delivery "
                                     "status nor a feedback report", rt ? rt : "(none)");
        return FBPARSE_NONE;
    }
    const char *what = want_dsn ? "delivery-status" : "feedback-report";
    if (w->truncated)
        return fbparse_done(out, FBPARSE_MALFORMED,
                            util_asprintf("truncated MIME: the multipart/report (%s) ends "
                                          "before its closing boundary", what));
    GMimeObject *part = want_dsn ? w->status : w->feedback;
    if (!part)
        return fbparse_done(out, FBPARSE_MALFORMED,
                            util_asprintf("multipart/report (%s) without a message/%s part",
                                          what, what));
    size_t len;
    char *text = fbparse_content(part, &len);
    char *bad = want_dsn ? fbparse_dsn_fields(text, len, w->l, out)
                         : fbparse_arf_fields(text, len, w->l, out);
    free(text);
    if (bad) return fbparse_done(out, FBPARSE_MALFORMED, bad);
    if (w->original) fbparse_original(w->original, w->l->max_field, out);
    if (want_arf) {
        out->shape = util_strdup("arf");
        return fbparse_done(out, FBPARSE_ARF,
                            util_asprintf("RFC 5965 feedback report (%s)", out->feedback_type));
    }
    const char *shape = fbparse_dsn_shape(top, out);
    out->shape = util_strdup(shape);
    bool std = strcmp(shape, "rfc3464") == 0;
    return fbparse_done(out, FBPARSE_DSN,
                        util_asprintf("RFC 3464 delivery-status report%s%s%s, %zu recipient%s",
                                      std ? "" : " (", std ? "" : shape, std ? "" : ")",
                                      out->nrcpts, out->nrcpts == 1 ? "" : "s"));
}

/* Steps 2 to 4 on the message's header and first text part. */
static fbparse_kind fbparse_heuristics(fbparse_walk *w, const fbparse_block *top,
                                       const char *envelope_from, fbparse_report *out)
{
    size_t len = 0;
    char *body = w->text ? fbparse_content(w->text, &len) : NULL;
    fbparse_kind kind = FBPARSE_NONE;
    char *prior = out->why;       /* step 1's note on a multipart/report of another type */
    out->why = NULL;
    const char *from = fbparse_block_get(top, "From");
    bool daemon = !envelope_from || !*envelope_from ||
                  fbparse_contains_ci(from, "mailer-daemon") ||
                  fbparse_contains_ci(from, "postmaster");
    char *bad = NULL;
    if (daemon && fbparse_nonstandard(top, body, len, w->l, out, &bad)) {
        if (bad) {
            kind = fbparse_done(out, FBPARSE_MALFORMED, bad);
        } else {
            if (w->original) fbparse_original(w->original, w->l->max_field, out);
            if (body) fbparse_orig_from_text(body, len, w->l->max_field, out);
            kind = out->kind = FBPARSE_DSN;
        }
    } else {
        char *why = fbparse_autoreply(top, body, len);
        if (why) {
            kind = fbparse_done(out, FBPARSE_AUTOREPLY, why);
        } else {
            out->why = prior ? prior
                             : util_strdup(w->text ? "no report part (a text message)"
                                                   : "no report part");
            prior = NULL;
        }
    }
    free(prior);
    free(body);
    return kind;
}

fbparse_kind fbparse_message(const char *msg, size_t len, const char *envelope_from,
                             const fbparse_limits *limits, fbparse_report *out)
{
    memset(out, 0, sizeof *out);
    fbparse_limits l;
    if (limits) l = *limits;
    else fbparse_default_limits(&l);
    if (len > l.max_bytes)
        return fbparse_done(out, FBPARSE_MALFORMED,
                            util_asprintf("report is %zu bytes, over the limit of %zu", len,
                                          l.max_bytes));
    char *over = fbparse_prescan(msg, len, &l);
    if (over) return fbparse_done(out, FBPARSE_MALFORMED, over);

    fbparse_walk w = {.l = &l};
    GMimeStream *stream = g_mime_stream_mem_new_with_buffer(msg, len);
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    GMimeParserOptions *opts = g_mime_parser_options_new();
    g_mime_parser_options_set_warning_callback(opts, fbparse_warning, &w);
    GMimeMessage *m = g_mime_parser_construct_message(parser, opts);
    fbparse_kind kind;
    if (!m) {
        kind = fbparse_done(out, FBPARSE_NONE, util_strdup("not a message (no header section)"));
    } else {
        fbparse_block top = {0};
        fbparse_headers((GMimeObject *)m, false, l.max_field, &top);
        fbparse_walk_object(&w, g_mime_message_get_mime_part(m), 1, false);
        if (w.over) {
            kind = fbparse_done(out, FBPARSE_MALFORMED, w.over);
            w.over = NULL;
        } else if (w.nesting) {
            kind = fbparse_done(out, FBPARSE_MALFORMED,
                                util_strdup("MIME nesting over GMime's own limit"));
        } else {
            kind = fbparse_report_parts(&w, &top, out);
            if (kind == FBPARSE_NONE) kind = fbparse_heuristics(&w, &top, envelope_from, out);
        }
        fbparse_block_free(&top);
        g_object_unref(m);
    }
    free(w.over);
    g_mime_parser_options_free(opts);
    g_object_unref(parser);
    g_object_unref(stream);
    if (!out->why) out->why = util_strdup(fbparse_kind_name(kind));
    out->kind = kind;
    return kind;
}
