/* test_fbtoken.c — the VERP envelope sender of outgoing mail (mta/fbtoken.c): the exact
 * token a receiver's bounce comes back to (golden values computed independently with
 * Python's hmac and base64, so the encoding is the contract's, not just self-consistent),
 * 50 characters and a local part within RFC 5321's 64, both scopes, round trips through
 * fbtoken_decode in any case, a token refused for the wrong key, the wrong recipient or any
 * changed character, and every malformed input with the reason it gives. (The MAIL FROM
 * outbound_prepare makes of it is test_outbound.c's.) */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/fbtoken.h"
#include "tests/unit/testlib.h"

#define KEY "0123456789abcdef0123456789abcdef"
#define KEYLEN (sizeof KEY - 1)
#define ID "0000018c1d2e3f40-ab12cd34-ef56-4789-8abc-def012345678-000000"
/* python3: base32(bytes.fromhex(hex of ID) + scope + hmac_sha256(KEY, "kiln-verp-1\0" ID
 * "\0" rcpt.lower())[:6]).lower() without '=' */
#define GOLDEN_ONE "aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6ab6gezwdajhi"   /* ann@dest.test */
#define GOLDEN_ALL "aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6aaffjlomzaqe"   /* scope 0 */

static const unsigned char *key = (const unsigned char *)KEY;

START_TEST(test_golden_tokens)
{
    char t[FBTOKEN_LEN + 1];
    ck_assert_int_eq(fbtoken_make(key, KEYLEN, ID, "Ann@Dest.TEST", t), 0);
    ck_assert_str_eq(t, GOLDEN_ONE);
    ck_assert_int_eq(fbtoken_make(key, KEYLEN, ID, "ann@dest.test", t), 0);
    ck_assert_str_eq(t, GOLDEN_ONE);                  /* the recipient is lower-cased */
    ck_assert_int_eq(fbtoken_make(key, KEYLEN, ID, NULL, t), 0);
    ck_assert_str_eq(t, GOLDEN_ALL);
    /* the id's hex digits may be upper case: the same message, the same token */
    ck_assert_int_eq(
        fbtoken_make(key, KEYLEN, "0000018C1D2E3F40-AB12CD34-EF56-4789-8ABC-DEF012345678-000000",
                     NULL, t), 0);
    ck_assert_str_eq(t, GOLDEN_ALL);
}
END_TEST

START_TEST(test_address_and_round_trip)
{
    char *a = fbtoken_address(key, KEYLEN, ID, "ann@dest.test", "bounce.example.com");
    ck_assert_str_eq(a, "bounce+" GOLDEN_ONE "@bounce.example.com");
    ck_assert_uint_eq(strlen(a) - strlen("@bounce.example.com"), 57);   /* <= 64 */
    fbtoken_info info;
    const char *why = "unset";
    ck_assert_int_eq(fbtoken_decode(a, &info, &why), 0);
    ck_assert_str_eq(info.msg_id, ID);
    ck_assert(info.one_rcpt);
    ck_assert(fbtoken_verify(key, KEYLEN, &info, "ann@dest.test"));
    ck_assert(fbtoken_verify(key, KEYLEN, &info, "ANN@dest.test"));    /* compared lower-cased */
    ck_assert(!fbtoken_verify(key, KEYLEN, &info, "bob@dest.test"));
    ck_assert(!fbtoken_verify(key, KEYLEN, &info, NULL));
    ck_assert(!fbtoken_verify((const unsigned char *)"another key 0123456789", 22, &info,
                              "ann@dest.test"));
    free(a);

    a = fbtoken_address(key, KEYLEN, ID, NULL, "mail.example.com");
    ck_assert_int_eq(fbtoken_decode(a, &info, &why), 0);
    ck_assert_str_eq(info.msg_id, ID);
    ck_assert(!info.one_rcpt);
    ck_assert(fbtoken_verify(key, KEYLEN, &info, NULL));
    ck_assert(fbtoken_verify(key, KEYLEN, &info, "anyone@dest.test"));  /* scope 0: ignored */
    ck_assert(!fbtoken_verify((const unsigned char *)"another key 0123456789", 22, &info, NULL));
    free(a);

    /* the local part alone, the token alone, upper case and mixed case decode alike */
    const char *forms[] = {"bounce+" GOLDEN_ONE, GOLDEN_ONE, "BOUNCE+" GOLDEN_ONE "@B.EXAMPLE",
                           "Bounce+AAAADDA5FY7UBKYSZU2O6VSHRGFLZXXQCI2FM6AB6GEZWDAJHI@x.test"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        ck_assert_msg(fbtoken_decode(forms[i], &info, &why) == 0, "%s: %s", forms[i], why);
        ck_assert_str_eq(info.msg_id, ID);
        ck_assert(info.one_rcpt);
        ck_assert(fbtoken_verify(key, KEYLEN, &info, "ann@dest.test"));
    }
    /* ids of other messages round trip too */
    const char *ids[] = {"ffffffffffffffff-ffffffff-ffff-4fff-bfff-ffffffffffff-000000",
                         "0000000000000000-00000000-0000-0000-0000-000000000000-000000"};
    for (size_t i = 0; i < 2; i++) {
        a = fbtoken_address(key, KEYLEN, ids[i], "r@d.test", "b.test");
        ck_assert_int_eq(fbtoken_decode(a, &info, &why), 0);
        ck_assert_str_eq(info.msg_id, ids[i]);
        ck_assert(fbtoken_verify(key, KEYLEN, &info, "r@d.test"));
        free(a);
    }
}
END_TEST

/* Any one character changed: either no token at all or one no MAC accepts. */
START_TEST(test_flipped_characters)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    for (int scope = 0; scope < 2; scope++) {
        const char *good = scope ? GOLDEN_ONE : GOLDEN_ALL;
        const char *rcpt = scope ? "ann@dest.test" : NULL;
        for (size_t i = 0; i < FBTOKEN_LEN; i++)
            for (size_t k = 0; k < 32; k++) {
                if (alphabet[k] == good[i]) continue;
                char t[FBTOKEN_LEN + 1];
                memcpy(t, good, sizeof t);
                t[i] = alphabet[k];
                fbtoken_info info;
                const char *why = NULL;
                if (fbtoken_decode(t, &info, &why) < 0) {
                    ck_assert_ptr_nonnull(why);
                    continue;
                }
                ck_assert_msg(!fbtoken_verify(key, KEYLEN, &info, rcpt), "%s verified", t);
                ck_assert_msg(!fbtoken_verify(key, KEYLEN, &info, "ann@dest.test"), "%s", t);
            }
    }
}
END_TEST

START_TEST(test_malformed)
{
    static const struct {
        const char *in, *why;
    } bad[] = {
        {"ann@dest.test", "not a bounce+ address"},
        {"bounces+" GOLDEN_ONE "@b.test", "not a bounce+ address"},
        {"bounce-" GOLDEN_ONE "@b.test", "not a bounce+ address"},
        {"bounce+" GOLDEN_ONE "@", "address has no domain"},
        {"bounce+" GOLDEN_ONE "@b@c.test", "address has more than one '@'"},
        {"bounce+" GOLDEN_ONE "a@b.test", "token is not 50 base32 characters"},
        {"bounce+aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6ab6gezwdajh@b.test",
         "token is not 50 base32 characters"},
        {"bounce+@b.test", "token is not 50 base32 characters"},
        {"bounce+", "token is not 50 base32 characters"},
        {"", "token is not 50 base32 characters"},
        {"bounce+aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6ab6gezwdajh1@b.test",
         "token is not 50 base32 characters"},                      /* '1' is not base32 */
        {"bounce+aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6ab6gezwdajh=@b.test",
         "token is not 50 base32 characters"},
        {"bounce+0000018c1d2e3f40ab12cd34ef5647898abcdef012345678@b.test",
         "token is not 50 base32 characters"},                      /* the old hex token */
        {"bounce+aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6ab6gezwdajhj@b.test",
         "token's last character is not canonical base32"},         /* spare bits set */
        {"bounce+aaaadda5fy7ubkyszu2o6vshrgflzxxqci2fm6ac6gezwdajhi@b.test",
         "token's scope is neither 0 nor 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fbtoken_info info;
        const char *why = NULL;
        ck_assert_msg(fbtoken_decode(bad[i].in, &info, &why) == -1, "%s decoded", bad[i].in);
        ck_assert_msg(why && strcmp(why, bad[i].why) == 0, "%s: %s, expected %s", bad[i].in,
                      why ? why : "(null)", bad[i].why);
    }
    fbtoken_info info;
    ck_assert_int_eq(fbtoken_decode(NULL, &info, NULL), -1);

    /* ids that are not kiln's make no token */
    static const char *const ids[] = {
        "",
        "<abc@example.com>",
        "0000018c1d2e3f40-ab12cd34-ef56-4789-8abc-def012345678",          /* no tail */
        "0000018c1d2e3f40-ab12cd34-ef56-4789-8abc-def012345678-000001",
        "0000018c1d2e3f40-ab12cd34-ef56-4789-8abc-def012345678-0000000",
        "0000018c1d2e3f4-ab12cd34-ef56-4789-8abc-def0123456789-000000",   /* groups shifted */
        "0000018c1d2e3f40ab12cd34ef5647898abcdef012345678",               /* no dashes */
        "0000018c1d2e3f40-ab12cd34-ef56-4789-8abc-def01234567g-000000",   /* not hex */
    };
    char t[FBTOKEN_LEN + 1];
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        ck_assert_msg(fbtoken_make(key, KEYLEN, ids[i], NULL, t) == -1, "%s", ids[i]);
        ck_assert_ptr_null(fbtoken_address(key, KEYLEN, ids[i], "r@d.test", "b.test"));
    }
    ck_assert_ptr_null(fbtoken_address(key, KEYLEN, ID, NULL, NULL));
}
END_TEST

static Suite *fbtoken_suite(void)
{
    Suite *s = suite_create("fbtoken");
    TCase *tc = tcase_create("token");
    tcase_add_test(tc, test_golden_tokens);
    tcase_add_test(tc, test_address_and_round_trip);
    tcase_add_test(tc, test_flipped_characters);
    tcase_add_test(tc, test_malformed);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(fbtoken_suite);
