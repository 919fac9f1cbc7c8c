/* msgtags.c — X-SES-MESSAGE-TAGS fields to message tags (see msgtags.h). Pure: no I/O.
 * The split on ',' and '=' is written here: the grammar is SES's own two-character one and no
 * library parses it. Error messages show at most 64 characters of a tag, non-printable bytes
 * as '?', so a reply or log line never carries the client's control characters. */
#include "mta/msgtags.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "mta/events.h"

#define MSGTAGS_SHOWN 64

void msgtags_free(msgtags *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->names[i]);
        free(t->values[i]);
    }
    free(t->names);
    free(t->values);
    memset(t, 0, sizeof *t);
}

static bool msgtags_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* s[0..n) without surrounding blanks, for an error message: printable, cut at 64. */
static char *msgtags_shown(const char *s, size_t n)
{
    while (n && msgtags_blank(*s)) s++, n--;
    while (n && msgtags_blank(s[n - 1])) n--;
    bool cut = n > MSGTAGS_SHOWN;
    if (cut) n = MSGTAGS_SHOWN;
    char *out = util_strndup(s, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e) out[i] = '?';
    if (!cut) return out;
    char *longer = util_asprintf("%s...", out);
    free(out);
    return longer;
}

/* s[0..n) trimmed of blanks, malloc'd. */
static char *msgtags_trimmed(const char *s, size_t n)
{
    while (n && msgtags_blank(*s)) s++, n--;
    while (n && msgtags_blank(s[n - 1])) n--;
    return util_strndup(s, n);
}

/* One "name=value" item (s[0..n)) added to out; -1 with *err on a broken rule. */
static int msgtags_add_item(const char *s, size_t n, msgtags *out, char **err)
{
    const char *eq = memchr(s, '=', n);
    if (!eq) {
        char *shown = msgtags_shown(s, n);
        *err = util_asprintf("%s: tag \"%s\" has no '=' (the form is name=value, name=value)",
                             MSGTAGS_HEADER, shown);
        free(shown);
        return -1;
    }
    char *name = msgtags_trimmed(s, (size_t)(eq - s));
    char *value = msgtags_trimmed(eq + 1, n - (size_t)(eq - s) - 1);
    const char *why = events_tag_check(name, true);
    bool bad_name = why != NULL;
    if (!why) why = events_tag_check(value, false);
    if (why) {
        char *shown = msgtags_shown(s, n);
        *err = util_asprintf("%s: tag \"%s\": the %s %s", MSGTAGS_HEADER, shown,
                             bad_name ? "name" : "value", why);
        free(shown);
        free(name);
        free(value);
        return -1;
    }
    if (out->n == MSGTAGS_MAX) {
        *err = util_asprintf("%s: more than %d message tags", MSGTAGS_HEADER, MSGTAGS_MAX);
        free(name);
        free(value);
        return -1;
    }
    out->names = util_realloc(out->names, (out->n + 1) * sizeof *out->names);
    out->values = util_realloc(out->values, (out->n + 1) * sizeof *out->values);
    out->names[out->n] = name;
    out->values[out->n++] = value;
    return 0;
}

int msgtags_from_headers(const msg_headers *hs, msgtags *out, char **err)
{
    memset(out, 0, sizeof *out);
    *err = NULL;
    for (size_t i = 0; i < hs->n; i++) {
        if (strcasecmp(hs->h[i].name, MSGTAGS_HEADER) != 0) continue;
        const char *v = hs->h[i].value;
        size_t len = strlen(v);
        size_t start = 0;
        for (size_t k = 0; k <= len; k++) {
            if (k < len && v[k] != ',') continue;
            if (msgtags_add_item(v + start, k - start, out, err) != 0) {
                msgtags_free(out);
                return -1;
            }
            start = k + 1;
        }
    }
    return 0;
}
