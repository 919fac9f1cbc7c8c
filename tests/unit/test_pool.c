/* test_pool.c — pools/pool.c: membership, round-robin spread of sessions over a pool's
 * IPs, avoiding a failed IP, and the empty pool (mail waits). Configs are built in memory. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "pool.h"

static config_ip test_ips[] = {
    {.address = "127.0.0.10", .zone = "az1", .pool = "transactional"},
    {.address = "127.0.0.20", .zone = "az1", .pool = "marketing"},
    {.address = "127.0.0.11", .zone = "az2", .pool = "transactional"},
    {.address = "127.0.0.12", .zone = "az3", .pool = "transactional"},
    {.address = "127.0.0.21", .zone = "az2", .pool = "marketing"},
};

static config make_cfg(void)
{
    config c;
    memset(&c, 0, sizeof c);
    c.ips = test_ips;
    c.nips = sizeof test_ips / sizeof test_ips[0];
    return c;
}

START_TEST(test_membership)
{
    config c = make_cfg();
    ck_assert_uint_eq(pool_ip_count(&c, "transactional"), 3);
    ck_assert_uint_eq(pool_ip_count(&c, "marketing"), 2);
    ck_assert_uint_eq(pool_ip_count(&c, "empty"), 0);
    ck_assert_str_eq(pool_ip_at(&c, "transactional", 0)->address, "127.0.0.10");
    ck_assert_str_eq(pool_ip_at(&c, "transactional", 1)->address, "127.0.0.11");
    ck_assert_str_eq(pool_ip_at(&c, "transactional", 2)->address, "127.0.0.12");
    ck_assert_ptr_null(pool_ip_at(&c, "transactional", 3));
    ck_assert(pool_has_ip(&c, "marketing", "127.0.0.21"));
    ck_assert(!pool_has_ip(&c, "marketing", "127.0.0.10"));
}
END_TEST

START_TEST(test_round_robin_spread)
{
    config c = make_cfg();
    uint64_t cur = 0;
    int count[3] = {0, 0, 0};
    const char *order[6];
    for (int i = 0; i < 300; i++) {
        const config_ip *ip = pool_choose_ip(&c, "transactional", &cur, NULL);
        ck_assert_ptr_nonnull(ip);
        ck_assert_str_eq(ip->pool, "transactional");
        if (i < 6) order[i] = ip->address;
        if (strcmp(ip->address, "127.0.0.10") == 0) count[0]++;
        else if (strcmp(ip->address, "127.0.0.11") == 0) count[1]++;
        else if (strcmp(ip->address, "127.0.0.12") == 0) count[2]++;
    }
    /* every IP gets exactly a third, in a repeating order */
    ck_assert_int_eq(count[0], 100);
    ck_assert_int_eq(count[1], 100);
    ck_assert_int_eq(count[2], 100);
    ck_assert_str_eq(order[0], "127.0.0.10");
    ck_assert_str_eq(order[1], "127.0.0.11");
    ck_assert_str_eq(order[2], "127.0.0.12");
    ck_assert_str_eq(order[3], "127.0.0.10");
    /* another pool with its own cursor never gets this pool's IPs */
    uint64_t cur2 = 0;
    ck_assert_str_eq(pool_choose_ip(&c, "marketing", &cur2, NULL)->address, "127.0.0.20");
    ck_assert_str_eq(pool_choose_ip(&c, "marketing", &cur2, NULL)->address, "127.0.0.21");
    ck_assert_str_eq(pool_choose_ip(&c, "marketing", &cur2, NULL)->address, "127.0.0.20");
}
END_TEST

START_TEST(test_cursor_survives_smaller_pool)
{
    /* a reload can shrink a pool below the cursor: the choice still lands in the pool */
    config c = make_cfg();
    uint64_t cur = 1000001;
    const config_ip *ip = pool_choose_ip(&c, "marketing", &cur, NULL);
    ck_assert_ptr_nonnull(ip);
    ck_assert_str_eq(ip->pool, "marketing");
}
END_TEST

START_TEST(test_avoid)
{
    config c = make_cfg();
    for (uint64_t start = 0; start < 6; start++) {
        uint64_t cur = start;
        const config_ip *ip = pool_choose_ip(&c, "transactional", &cur, "127.0.0.11");
        ck_assert_str_ne(ip->address, "127.0.0.11");
    }
    /* the avoided IP is the only one of a pool: it is still used */
    config_ip one[] = {{.address = "127.0.0.30", .zone = "az1", .pool = "solo"}};
    config c1 = make_cfg();
    c1.ips = one;
    c1.nips = 1;
    uint64_t cur = 0;
    ck_assert_str_eq(pool_choose_ip(&c1, "solo", &cur, "127.0.0.30")->address, "127.0.0.30");
    /* avoiding an address outside the pool changes nothing */
    cur = 0;
    ck_assert_str_eq(pool_choose_ip(&c, "transactional", &cur, "192.0.2.1")->address,
                     "127.0.0.10");
}
END_TEST

START_TEST(test_empty_pool)
{
    config c = make_cfg();
    uint64_t cur = 7;
    ck_assert_ptr_null(pool_choose_ip(&c, "nosuchpool", &cur, NULL));
    ck_assert_ptr_null(pool_choose_ip(&c, "nosuchpool", &cur, "127.0.0.10"));
    config none;
    memset(&none, 0, sizeof none);
    ck_assert_ptr_null(pool_choose_ip(&none, "transactional", &cur, NULL));
}
END_TEST

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_membership);
    tcase_add_test(tc, test_round_robin_spread);
    tcase_add_test(tc, test_cursor_survives_smaller_pool);
    tcase_add_test(tc, test_avoid);
    tcase_add_test(tc, test_empty_pool);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pool_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
