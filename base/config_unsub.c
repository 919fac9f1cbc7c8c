/* config_unsub.c — a configuration set's one-click unsubscribe and Feedback-ID keys:
 *
 *   list_unsubscribe: {url: "https://example.com/unsub?id={message_id}&r={recipient}",
 *                      mailto: unsubscribe@example.com}
 *   feedback_id: "campaign:marketing:kiln"
 *
 * Promises: what passes here can be written into a header field as it is (mta/unsub.c only
 * fills in the variables). The url is required when list_unsubscribe is given (RFC 8058
 * one-click needs an HTTPS URI; a mailto alone is not one-click) and must be an absolute
 * https:// URL of at most CONFIG_UNSUB_URL_MAX bytes: characters of RFC 3986 only (a '%'
 * followed by two hex digits, no blanks, no '<', '>', '"', no fragment), the variables
 * {recipient}, {message_id} and {configuration_set} only, in the path or query only, and,
 * with each variable filled in, a URL curl's parser accepts with a valid host, no user
 * info and a port 1..65535 (config_url_problem, shared with the webhooks). The mailto is a
 * plain address (local part of letters, digits and !$&'*+-=_~. in dot-atom form, a valid
 * domain) that needs no encoding in a mailto: URI. The feedback_id is printable ASCII, at
 * most CONFIG_FEEDBACK_ID_MAX bytes, without blanks at either end. Every refusal is an
 * error naming the file, the line and the key (configuration_sets[1].list_unsubscribe.url)
 * and saying what is wrong. */
#include "base/config_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UNSUB_VARS_TEXT "{recipient}, {message_id}, {configuration_set}"
#define UNSUB_MAILTO_MAX 254     /* an address, as RFC 5321 paths allow */
#define UNSUB_LOCAL_MAX 64

static const char *const config_unsub_vars[] = {"{recipient}", "{message_id}",
                                                "{configuration_set}"};

int config_unsub_var_at(const char *s, size_t *len)
{
    if (s[0] != '{') return -1;
    for (size_t i = 0; i < sizeof config_unsub_vars / sizeof config_unsub_vars[0]; i++) {
        size_t n = strlen(config_unsub_vars[i]);
        if (strncmp(s, config_unsub_vars[i], n) == 0) {
            *len = n;
            return (int)i;
        }
    }
    return -1;
}

bool config_set_per_recipient(const config_set *s)
{
    if (!s || !s->unsub_url) return false;
    size_t n = 0;
    for (const char *q = strchr(s->unsub_url, '{'); q; q = strchr(q + 1, '{'))
        if (config_unsub_var_at(q, &n) == CONFIG_UNSUB_RECIPIENT) return true;
    return false;
}

/* RFC 3986 characters a URL may hold as they are (a '%' is checked apart, '#' too). */
static bool config_unsub_url_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("-._~:/?[]@!$&'()*+,;=", c));
}

/* Why the characters of template T are not a URL template (malloc'd), or NULL. */
static char *config_unsub_chars_problem(const char *t)
{
    for (const char *q = t; *q; q++) {
        unsigned char c = (unsigned char)*q;
        size_t n = 0;
        if (c == '{') {
            if (config_unsub_var_at(q, &n) >= 0) {
                q += n - 1;
                continue;
            }
            const char *close = strchr(q, '}');
            if (!close) return util_strdup("has a '{' without a closing '}'");
            return util_asprintf("names an unknown variable %.*s (known: " UNSUB_VARS_TEXT ")",
                                 (int)(close - q + 1 > 40 ? 40 : close - q + 1), q);
        }
        if (c == '}') return util_strdup("has a '}' without a '{' before it");
        if (c == '%') {
            if (!isxdigit((unsigned char)q[1]) || !isxdigit((unsigned char)q[2]))
                return util_strdup("has a '%' that is not followed by two hex digits");
            continue;
        }
        if (c == '#') return util_strdup("has a fragment (#...), which is never sent");
        if (c <= 0x20 || c == 0x7f)
            return util_strdup("contains a blank or control character (percent-encode it)");
        if (c >= 0x80)
            return util_asprintf("contains byte 0x%02X, which is not allowed in a URL "
                                 "(percent-encode it as %%%02X)", c, c);
        if (!config_unsub_url_char(c))
            return util_asprintf("contains '%c', which is not allowed in a URL (percent-encode "
                                 "it as %%%02X)", c, c);
    }
    return NULL;
}

/* Why T is not a usable list_unsubscribe.url (malloc'd), or NULL. */
static char *config_unsub_url_problem(const char *t)
{
    size_t len = strlen(t);
    if (len > CONFIG_UNSUB_URL_MAX)
        return util_asprintf("is %zu bytes long; at most %d are allowed", len,
                             CONFIG_UNSUB_URL_MAX);
    if (strncasecmp(t, "https://", 8) != 0)
        return util_strdup("is not an absolute https:// URL (RFC 8058 one-click unsubscribe "
                           "posts to an HTTPS URL)");
    char *why = config_unsub_chars_problem(t);
    if (why) return why;
    size_t host_end = 8 + strcspn(t + 8, "/?");
    const char *brace = strchr(t, '{');
    if (brace && (size_t)(brace - t) < host_end)
        return util_strdup("uses a variable in the host; variables belong in the path or "
                           "query");
    /* The URL as it will be, each variable standing for a sample value. */
    strbuf sample;
    strbuf_init(&sample);
    for (const char *q = t; *q; q++) {
        size_t n = 0;
        if (config_unsub_var_at(q, &n) >= 0) {
            strbuf_puts(&sample, "x");
            q += n - 1;
        } else {
            strbuf_append(&sample, q, 1);
        }
    }
    why = config_url_problem(sample.buf, true);
    strbuf_free(&sample);
    return why;
}

static int config_read_unsub_url(config_parser *p, yaml_node_t *v, config_set *s)
{
    const char *t = NULL;
    if (config_as_scalar(p, v, "an https:// URL", &t) < 0) return -1;
    char *why = config_unsub_url_problem(t);
    if (why) {
        config_fail(p, v, "'%.*s' %s", 120, t, why);
        free(why);
        return -1;
    }
    s->unsub_url = util_strdup(t);
    return 0;
}

/* An address a mailto: URI carries without percent-encoding. */
static bool config_unsub_address(const char *a)
{
    const char *at = strrchr(a, '@');
    size_t local = at ? (size_t)(at - a) : 0;
    if (!at || local == 0 || local > UNSUB_LOCAL_MAX || strlen(a) > UNSUB_MAILTO_MAX) return false;
    if (a[0] == '.' || at[-1] == '.') return false;
    for (const char *q = a; q < at; q++) {
        unsigned char c = (unsigned char)*q;
        if (!isalnum(c) && !strchr("!$&'*+-=_~.", c)) return false;
        if (c == '.' && q[1] == '.') return false;
    }
    return config_valid_hostname(at + 1);
}

static int config_read_unsub_mailto(config_parser *p, yaml_node_t *v, config_set *s)
{
    const char *a = NULL;
    if (config_as_scalar(p, v, "an address", &a) < 0) return -1;
    if (strncasecmp(a, "mailto:", 7) == 0)
        return config_fail(p, v,
                           "'%.*s': write the address alone (kiln writes "
                           "mailto:ADDRESS?subject=unsubscribe)",
                           120, a);
    if (!config_unsub_address(a))
        return config_fail(p, v,
                           "'%.*s' is not an address a mailto: URL can carry (local@domain; "
                           "the local part of letters, digits and !$&'*+-=_~. without a "
                           "leading, trailing or double dot)",
                           120, a);
    s->unsub_mailto = util_strdup(a);
    return 0;
}

static int config_read_list_unsub(config_parser *p, yaml_node_t *v, config_set *s)
{
    static const char *const keys[] = {"url", "mailto", NULL};
    if (config_as_map(p, v, keys) < 0) return -1;
    if (!config_lookup(p, v, "url", NULL))
        return config_missing(p, LINE(v), "url",
                              "(an https:// URL: RFC 8058 one-click unsubscribe needs one; a "
                              "mailto alone is not one-click)");
    FIELD(v, "url", f, config_read_unsub_url(p, f, s));
    FIELD(v, "mailto", f, config_read_unsub_mailto(p, f, s));
    return 0;
}

static int config_read_feedback_id(config_parser *p, yaml_node_t *v, config_set *s)
{
    const char *t = NULL;
    if (config_as_scalar(p, v, "a text value", &t) < 0) return -1;
    size_t n = strlen(t);
    if (n == 0) return config_fail(p, v, "must not be empty");
    if (n > CONFIG_FEEDBACK_ID_MAX)
        return config_fail(p, v, "is %zu bytes long; at most %d are allowed", n,
                           CONFIG_FEEDBACK_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c < 0x20 || c > 0x7e)
            return config_fail(p, v,
                               "contains byte 0x%02X at offset %zu; a Feedback-ID is printable "
                               "ASCII",
                               c, i);
    }
    if (t[0] == ' ' || t[n - 1] == ' ')
        return config_fail(p, v, "'%s' starts or ends with a blank", t);
    s->feedback_id = util_strdup(t);
    return 0;
}

int config_read_set_unsub(config_parser *p, yaml_node_t *it, config_set *s)
{
    FIELD(it, "list_unsubscribe", f, config_read_list_unsub(p, f, s));
    FIELD(it, "feedback_id", f, config_read_feedback_id(p, f, s));
    return 0;
}

void config_summary_unsub(strbuf *sb, const config_set *s)
{
    if (s->unsub_url) {
        strbuf_printf(sb, ", list_unsubscribe <%s>", s->unsub_url);
        if (s->unsub_mailto)
            strbuf_printf(sb, " <mailto:%s?subject=unsubscribe>", s->unsub_mailto);
        if (config_set_per_recipient(s)) strbuf_puts(sb, " (one recipient per delivery)");
    }
    if (s->feedback_id) strbuf_printf(sb, ", feedback_id %s", s->feedback_id);
}
