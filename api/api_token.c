/* api_token.c — the paging of the SES API's list operations: PageSize checked against the
 * operation's range, and NextToken, "<operation>\n<last key>" in base64, so a client can
 * only hand back what kiln gave it; a token of another operation, or one that does not
 * decode, is refused. */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/util.h"
#include "mta/auth.h"

char *api_next_token(const char *op, const char *last_key)
{
    char *plain = util_asprintf("%s\n%s", op, last_key);
    char *tok = auth_b64_encode(plain, strlen(plain));
    free(plain);
    return tok;
}

char *api_next_token_key(const char *op, const char *token)
{
    size_t n = 0;
    char *plain = token ? auth_b64_decode(token, &n) : NULL;
    if (!plain) return NULL;
    size_t oplen = strlen(op);
    char *key = NULL;
    if (n > oplen && memcmp(plain, op, oplen) == 0 && plain[oplen] == '\n' &&
        memchr(plain, '\0', n) == NULL)
        key = util_strdup(plain + oplen + 1);
    free(plain);
    return key;
}

int api_page_args(api_call *c, size_t def, size_t max, const char *bad_token_type,
                  size_t *page, char **after)
{
    *after = NULL;
    *page = def;
    json_t *ps = api_in(c, "PageSize");
    if (ps) {
        json_int_t v = json_is_integer(ps) ? json_integer_value(ps) : 0;
        if (v < 1 || (size_t)v > max) {
            API_BAD_REQUEST(c, "PageSize must be between 1 and %zu", max);
            return -1;
        }
        *page = (size_t)v;
    }
    const char *tok = api_in_str(c, "NextToken");
    if (tok) {
        *after = api_next_token_key(c->op, tok);
        if (!*after) {
            api_error(c, 400, bad_token_type, "The NextToken is not one %s gave", c->op);
            return -1;
        }
    }
    return 0;
}
