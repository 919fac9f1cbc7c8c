/* test_tls_policy.c — the pure parts of outbound TLS levels: MTA-STS policy files, TXT
 * records and MX patterns (mta/sts_policy.c, RFC 8461 sections 3.1, 3.2 and 4.1), the TLSA
 * answer walker and the AD bit (mta/dns_wire.c), which TLSA records may authenticate an
 * SMTP server (RFC 7672 section 3.1), the outbound minimum of TLS 1.2 (mta/tls.c), and
 * the delivery keys of the config (base/config_tls.c). Table-driven. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "base/config.h"
#include "base/util.h"
#include "mta/dns_wire.h"
#include "mta/sts_policy.h"
#include "mta/tls.h"
#include "tests/unit/testlib.h"

/* ------------------------------------------------------------------ MTA-STS policies */

START_TEST(test_policy_ok)
{
    const char *text = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                       "mx: *.Example.NET.\r\nmax_age: 86400\r\nfuture: ignored\r\n";
    sts_policy p;
    char *err = NULL;
    ck_assert_int_eq(sts_policy_parse(text, strlen(text), &p, &err), 0);
    ck_assert_int_eq(p.mode, STS_MODE_ENFORCE);
    ck_assert_int_eq(p.max_age_s, 86400);
    ck_assert_uint_eq(p.nmx, 2);
    ck_assert_str_eq(p.mx[1], "*.example.net");
    ck_assert(sts_policy_mx_allowed(&p, "mail.example.com"));
    ck_assert(sts_policy_mx_allowed(&p, "MX1.example.net."));
    ck_assert(!sts_policy_mx_allowed(&p, "a.b.example.net"));
    ck_assert(!sts_policy_mx_allowed(&p, "example.net"));
    ck_assert(!sts_policy_mx_allowed(&p, "evil-mail.example.com"));
    sts_policy c;
    sts_policy_copy(&c, &p);
    sts_policy_clear(&p);
    ck_assert_str_eq(c.mx[0], "mail.example.com");
    sts_policy_clear(&c);

    const char *none = "version: STSv1\nmode: none\nmax_age: 0\n";
    ck_assert_int_eq(sts_policy_parse(none, strlen(none), &p, &err), 0);
    ck_assert_int_eq(p.mode, STS_MODE_NONE);
    sts_policy_clear(&p);
}
END_TEST

static const struct {
    const char *text;
    const char *err;
} bad_policies[] = {
    {"mode: enforce\nmx: a.test\nmax_age: 1\n", "no version field"},
    {"version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", "version: 'STSv2' is not STSv1"},
    {"version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n", "mode: 'strict' is not enforce, testing or none"},
    {"version: STSv1\nmode: enforce\nmax_age: 1\n", "mode enforce without any mx field"},
    {"version: STSv1\nmode: testing\nmx: a.test\n", "no max_age field"},
    {"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n", "max_age: '31557601' is not"},
    {"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n", "max_age: '-1' is not"},
    {"version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n", "mx: 'a..test' is not a host name"},
    {"version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", "mx: '*' is not"},
    {"version: STSv1\nmode enforce\n", "a line without 'key: value'"},
};

START_TEST(test_policy_bad)
{
    sts_policy p;
    char *err = NULL;
    const char *t = bad_policies[_i].text;
    ck_assert_int_eq(sts_policy_parse(t, strlen(t), &p, &err), -1);
    ck_assert_msg(strstr(err, bad_policies[_i].err), "%s: got '%s'", t, err);
    free(err);
}
END_TEST

START_TEST(test_policy_limits)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "version: STSv1\nmode: enforce\nmax_age: 60\n");
    for (int i = 0; i <= STS_POLICY_MAX_MX; i++) strbuf_printf(&sb, "mx: mx%d.test\n", i);
    sts_policy p;
    char *err = NULL;
    ck_assert_int_eq(sts_policy_parse(sb.buf, sb.len, &p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "more than 64 mx lines"));
    free(err);
    ck_assert_int_eq(sts_policy_parse(sb.buf, STS_POLICY_MAX_BYTES + 1, &p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "larger than 65536 bytes"));
    free(err);
    strbuf_free(&sb);
}
END_TEST

static const struct {
    const char *txt;
    const char *id;   /* NULL: not a valid record */
} txts[] = {
    {"v=STSv1; id=20160831085700Z;", "20160831085700Z"},
    {"v=STSv1;id=abc", "abc"},
    {"v=STSv1; ext=1; id=x1 ;", "x1"},
    {"v=STSv1; id=;", NULL},
    {"v=STSv1; id=has-dash;", NULL},
    {"v=STSv1; id=123456789012345678901234567890123;", NULL},
    {"v=STSv1;", NULL},
    {"v=STSv10; id=1;", NULL},
    {"id=1; v=STSv1;", NULL},
    {"v=spf1 -all", NULL},
};

START_TEST(test_txt)
{
    char id[STS_ID_MAX + 1];
    int r = sts_txt_id(txts[_i].txt, strlen(txts[_i].txt), id, sizeof id);
    if (txts[_i].id) {
        ck_assert_msg(r == 0, "%s", txts[_i].txt);
        ck_assert_str_eq(id, txts[_i].id);
    } else {
        ck_assert_msg(r == -1, "%s accepted", txts[_i].txt);
    }
}
END_TEST

/* ------------------------------------------------------------------ DNS wire, TLSA */

/* A response to _25._tcp.mx.test TLSA with the given answer records (rdata after the
 * name pointer to the question). */
static size_t tlsa_answer(unsigned char *buf, bool ad, const unsigned char *rd, size_t rdlen, int n)
{
    static const unsigned char q[] = "\x03_25\x04_tcp\x02mx\x04test";
    size_t len = 0;
    unsigned char hdr[12] = {0x12, 0x34, 0x81, (unsigned char)(0x80 | (ad ? 0x20 : 0)), 0, 1, 0, (unsigned char)n, 0, 0, 0, 0};
    memcpy(buf, hdr, 12);
    len = 12;
    memcpy(buf + len, q, sizeof q);   /* with its terminating zero label */
    len += sizeof q;
    memcpy(buf + len, "\x00\x34\x00\x01", 4);
    len += 4;
    for (int i = 0; i < n; i++) {
        unsigned char rr[12] = {0xc0, 12, 0, 52, 0, 1, 0, 0, 0, 30, (unsigned char)(rdlen >> 8), (unsigned char)rdlen};
        memcpy(buf + len, rr, 12);
        len += 12;
        memcpy(buf + len, rd, rdlen);
        len += rdlen;
    }
    return len;
}

START_TEST(test_tlsa_walker)
{
    unsigned char rd[35] = {3, 1, 1};
    for (int i = 3; i < 35; i++) rd[i] = (unsigned char)i;
    unsigned char buf[512];
    size_t len = tlsa_answer(buf, true, rd, sizeof rd, 2);
    ck_assert(dns_wire_ad(buf, (int)len));
    ck_assert_int_eq(dns_wire_rcode(buf, (int)len), 0);
    ck_assert_int_eq(dns_wire_min_ttl(buf, (int)len, DNS_WIRE_TYPE_TLSA), 30);
    dns_wire_tlsa r[4];
    ck_assert_int_eq(dns_wire_tlsa_records(buf, (int)len, r, 4), 2);
    ck_assert_int_eq(r[0].usage, 3);
    ck_assert_int_eq(r[0].selector, 1);
    ck_assert_int_eq(r[0].mtype, 1);
    ck_assert_uint_eq(r[0].len, 32);
    ck_assert_int_eq(r[1].data[0], 3);
    ck_assert_int_eq(dns_wire_tlsa_records(buf, (int)len, r, 1), 1);   /* at most max */
    /* without AD; truncated (every shorter prefix is malformed or has fewer records) */
    len = tlsa_answer(buf, false, rd, sizeof rd, 1);
    ck_assert(!dns_wire_ad(buf, (int)len));
    for (size_t cut = 0; cut < len; cut++)
        ck_assert_int_le(dns_wire_tlsa_records(buf, (int)cut, r, 4), 0);
    /* rdata shorter than 4 bytes is no record */
    len = tlsa_answer(buf, true, rd, 3, 1);
    ck_assert_int_eq(dns_wire_tlsa_records(buf, (int)len, r, 4), 0);
}
END_TEST

static const struct {
    tls_tlsa r;
    bool usable;
} usable_cases[] = {
    {{3, 1, 1, NULL, 32}, true},  {{2, 0, 2, NULL, 64}, true},  {{3, 0, 0, NULL, 700}, true},
    {{1, 1, 1, NULL, 32}, false}, {{0, 0, 1, NULL, 32}, false}, {{3, 2, 1, NULL, 32}, false},
    {{3, 1, 1, NULL, 31}, false}, {{3, 1, 2, NULL, 32}, false}, {{3, 1, 3, NULL, 32}, false},
    {{3, 0, 0, NULL, 0}, false},
};

START_TEST(test_tlsa_usable)
{
    ck_assert_msg(tls_tlsa_usable(&usable_cases[_i].r) == usable_cases[_i].usable, "case %d", _i);
}
END_TEST

/* ------------------------------------------------------------------ TLS and config */

START_TEST(test_client_min_tls12)
{
    char *err = NULL;
    tls_ctx *c = tls_client_ctx_new(false, &err);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(tls_ctx_min_version(c), TLS1_2_VERSION);
    ck_assert_int_eq(tls_client_ctx_set_ca(c, "/nonexistent/ca.pem", &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/ca.pem: cannot load CA certificates"));
    free(err);
    ck_assert_int_eq(tls_client_ctx_set_ca(c, NULL, &err), 0);
    tls_ctx_free(c);
}
END_TEST

START_TEST(test_config_defaults)
{
    char path[] = "/tmp/kiln-test-tls-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *yaml = "server: {hostname: h.test}\nzones: [az1]\n"
                       "ips: [{address: 127.0.0.10, zone: az1, pool: p}]\npools: [{name: p}]\n"
                       "configuration_sets: [{name: s, pool: p, tls_policy: mta-sts}]\n"
                       "default_configuration_set: s\n";
    ck_assert_int_eq(write(fd, yaml, strlen(yaml)), (int)strlen(yaml));
    close(fd);
    char *err = NULL;
    config *c = config_load(path, NULL, &err);
    unlink(path);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_null(c->tls_ca_file);
    ck_assert_int_eq(c->mta_sts_fetch_timeout_ms, 10000);
    ck_assert_int_eq(c->mta_sts_cache_size, 10000);
    ck_assert_int_eq(c->mta_sts_port, 443);
    ck_assert_int_eq(c->sets[0].tls_policy, CONFIG_TLS_MTA_STS);
    config_unref(c);
}
END_TEST

static Suite *tls_policy_suite(void)
{
    Suite *s = suite_create("tls_policy");
    TCase *t = tcase_create("sts");
    tcase_add_test(t, test_policy_ok);
    tcase_add_loop_test(t, test_policy_bad, 0, (int)(sizeof bad_policies / sizeof bad_policies[0]));
    tcase_add_test(t, test_policy_limits);
    tcase_add_loop_test(t, test_txt, 0, (int)(sizeof txts / sizeof txts[0]));
    suite_add_tcase(s, t);
    t = tcase_create("dane");
    tcase_add_test(t, test_tlsa_walker);
    tcase_add_loop_test(t, test_tlsa_usable, 0, (int)(sizeof usable_cases / sizeof usable_cases[0]));
    suite_add_tcase(s, t);
    t = tcase_create("tls");
    tcase_add_test(t, test_client_min_tls12);
    tcase_add_test(t, test_config_defaults);
    suite_add_tcase(s, t);
    return s;
}

TESTLIB_SUITES(tls_policy_suite);
