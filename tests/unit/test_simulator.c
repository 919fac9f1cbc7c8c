/* test_simulator.c — which addresses the SES mailbox simulator handles (mta/simulator.c):
 * the five mailboxes, +labels, any letter case, and look-alikes that must go to the network. */
#include <check.h>
#include <stdlib.h>

#include "mta/simulator.h"
#include "tests/unit/testlib.h"

typedef struct {
    const char *address;
    simulator_kind want;
} sim_case;

static const sim_case cases[] = {
    {"success@simulator.amazonses.com", SIMULATOR_SUCCESS},
    {"bounce@simulator.amazonses.com", SIMULATOR_BOUNCE},
    {"ooto@simulator.amazonses.com", SIMULATOR_OOTO},
    {"complaint@simulator.amazonses.com", SIMULATOR_COMPLAINT},
    {"suppressionlist@simulator.amazonses.com", SIMULATOR_SUPPRESSIONLIST},
    /* labels */
    {"bounce+test1@simulator.amazonses.com", SIMULATOR_BOUNCE},
    {"success+a+b@simulator.amazonses.com", SIMULATOR_SUCCESS},
    {"complaint+@simulator.amazonses.com", SIMULATOR_COMPLAINT},
    {"suppressionlist+x.y-z@simulator.amazonses.com", SIMULATOR_SUPPRESSIONLIST},
    /* case */
    {"BOUNCE@SIMULATOR.AMAZONSES.COM", SIMULATOR_BOUNCE},
    {"Ooto+Label@Simulator.AmazonSES.com", SIMULATOR_OOTO},
    {"SuccesS@simulator.amazonses.COM", SIMULATOR_SUCCESS},
    /* other domains and look-alikes */
    {"bounce@example.test", SIMULATOR_NONE},
    {"bounce@simulator.amazonses.com.evil.test", SIMULATOR_NONE},
    {"bounce@evil-simulator.amazonses.com", SIMULATOR_NONE},
    {"bounce@sub.simulator.amazonses.com", SIMULATOR_NONE},
    {"bounce@amazonses.com", SIMULATOR_NONE},
    {"bounce@simulator.amazonses.co", SIMULATOR_NONE},
    {"xbounce@simulator.amazonses.com", SIMULATOR_NONE},
    {"bouncex@simulator.amazonses.com", SIMULATOR_NONE},
    {"bounce-test@simulator.amazonses.com", SIMULATOR_NONE},
    {"suppression@simulator.amazonses.com", SIMULATOR_NONE},
    {"+bounce@simulator.amazonses.com", SIMULATOR_NONE},
    {"someone@simulator.amazonses.com", SIMULATOR_NONE},
    {"@simulator.amazonses.com", SIMULATOR_NONE},
    {"bounce", SIMULATOR_NONE},
    {"simulator.amazonses.com", SIMULATOR_NONE},
    {"", SIMULATOR_NONE},
};

START_TEST(test_classify_table)
{
    const sim_case *c = &cases[_i];
    simulator_kind got = simulator_classify(c->address);
    ck_assert_msg(got == c->want, "%s: got kind %d, want %d", c->address, (int)got,
                  (int)c->want);
}
END_TEST

START_TEST(test_classify_null)
{
    ck_assert_int_eq(simulator_classify(NULL), SIMULATOR_NONE);
}
END_TEST

static Suite *simulator_suite(void)
{
    Suite *s = suite_create("simulator");
    TCase *tc = tcase_create("classify");
    tcase_add_loop_test(tc, test_classify_table, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, test_classify_null);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(simulator_suite);
