/* api_token.c — the NextToken of the SES API's list operations: "<operation>\n<last key>"
 * in base64, so a client can only hand back what kiln gave it; a token of another
 * operation, or one that does not decode, is refused (InvalidNextTokenException). */
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
