/* test_identity_check.c — the pure half of mta/identity_check.h without DNS: the DKIM key
 * record against kiln's key (match, folded p=, mismatch, revoked, k= and h= mismatches,
 * malformed, v= not first, missing, two records, lookup failure), the MAIL FROM domain's
 * MX (SES's MailFromDomainStatus), its SPF record (ip4 exact and CIDR, IPv6, IPv4-mapped,
 * a pool IP left out, +all and an open network, two records, include/mx/redirect reported
 * as not checked, syntax errors), DMARC (alignment through DKIM or the MAIL FROM domain,
 * relaxed and strict, p=none, sp= from the organizational domain, missing, duplicates),
 * the assembled verdict and its two reports (GetEmailIdentity field names as in botocore's
 * sesv2 model; kilnctl's table and zone-file publish lines). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "mta/identity_check.h"
#include "tests/unit/testlib.h"

#define TXT(...)                                                                                      \
    ((identity_answer){IDENTITY_ANS_RECORDS, (const char *const[]){__VA_ARGS__},                      \
                       sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *), NULL, 0, NULL})
#define NXDOMAIN ((identity_answer){IDENTITY_ANS_NXDOMAIN, NULL, 0, NULL, 0, NULL})
#define NODATA ((identity_answer){IDENTITY_ANS_NODATA, NULL, 0, NULL, 0, NULL})
#define TEMPFAIL ((identity_answer){IDENTITY_ANS_TEMPFAIL, NULL, 0, NULL, 0, "timeout"})

static void rec_clear(identity_record *r)
{
    free(r->selector);
    free(r->name);
    free(r->found);
    free(r->reason);
    free(r->publish);
}

#define ASSERT_HAS(s, part) ck_assert_msg((s) && strstr((s), (part)), "\"%s\" lacks \"%s\"", (s) ? (s) : "(null)", (part))

/* ---------- DKIM ---------- */

static const identity_dkim_selector rsa_sel = {"s1", "rsa", "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey"};
static const identity_dkim_selector ed_sel = {"e1", "ed25519", "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="};

static const struct {
    const char *what;
    const identity_dkim_selector *sel;
    identity_answer ans;
    identity_status want;
    const char *reason_part;
} dkim_cases[] = {
    {"match", &rsa_sel, TXT("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey"), IDENTITY_PUBLISHED,
     "the published key is kiln's (k=rsa)"},
    {"folded p=, no v= or k=, trailing ;", &rsa_sel,
     TXT("p=MIIBIjANBgkqhkiG9w0B AQEFAAOCAQ8AMIIBCgKCAQEAkey ;"), IDENTITY_PUBLISHED, "kiln's"},
    {"ed25519", &ed_sel, TXT("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="),
     IDENTITY_PUBLISHED, "k=ed25519"},
    {"testing flag", &rsa_sel, TXT("v=DKIM1; t=y; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey"),
     IDENTITY_PUBLISHED, "t=y: testing mode"},
    {"other key", &rsa_sel, TXT("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAold"), IDENTITY_WRONG,
     "the published key does not match the key kiln signs with"},
    {"revoked", &rsa_sel, TXT("v=DKIM1; k=rsa; p="), IDENTITY_WRONG, "revoked (empty p=)"},
    {"k= differs", &rsa_sel, TXT("v=DKIM1; k=ed25519; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey"),
     IDENTITY_WRONG, "k=ed25519, kiln signs with a k=rsa key"},
    {"default k=rsa for an ed25519 key", &ed_sel, TXT("v=DKIM1; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="),
     IDENTITY_WRONG, "k=rsa (default)"},
    {"h= without sha256", &rsa_sel, TXT("v=DKIM1; h=sha1; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey"),
     IDENTITY_WRONG, "h=sha1 does not allow sha256"},
    {"malformed", &rsa_sel, TXT("v=DKIM1; k=rsa; p"), IDENTITY_WRONG, "not a valid DKIM tag list (a tag without '=')"},
    {"duplicate tag", &rsa_sel, TXT("v=DKIM1; p=a; p=b"), IDENTITY_WRONG, "a tag appears twice"},
    {"v= not first", &rsa_sel, TXT("k=rsa; v=DKIM1; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey"),
     IDENTITY_WRONG, "v= must be the first tag"},
    {"two records", &rsa_sel,
     TXT("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey", "v=DKIM1; k=rsa; p=MIIBold"),
     IDENTITY_WRONG, "2 TXT records (one of them is kiln's key)"},
    {"not a DKIM record", &rsa_sel, TXT("v=spf1 -all"), IDENTITY_MISSING, "v=spf1 -all is not a DKIM key record"},
    {"NXDOMAIN", &rsa_sel, NXDOMAIN, IDENTITY_MISSING, "s1._domainkey.example.com does not exist (NXDOMAIN)"},
    {"no TXT", &rsa_sel, NODATA, IDENTITY_MISSING, "has no TXT record"},
    {"lookup failed", &rsa_sel, TEMPFAIL, IDENTITY_TEMPFAIL, "not known yet: the TXT lookup of s1._domainkey.example.com failed (timeout)"},
};

START_TEST(test_dkim_table)
{
    for (size_t i = 0; i < sizeof dkim_cases / sizeof dkim_cases[0]; i++) {
        identity_record r;
        identity_eval_dkim(&r, "example.com", dkim_cases[i].sel, &dkim_cases[i].ans);
        ck_assert_msg(r.status == dkim_cases[i].want, "%s: %s, want %s (%s)", dkim_cases[i].what,
                      identity_status_name(r.status), identity_status_name(dkim_cases[i].want), r.reason);
        ck_assert_msg(strstr(r.reason, dkim_cases[i].reason_part), "%s: reason \"%s\" lacks \"%s\"",
                      dkim_cases[i].what, r.reason, dkim_cases[i].reason_part);
        ck_assert_str_eq(r.name, dkim_cases[i].sel == &rsa_sel ? "s1._domainkey.example.com" : "e1._domainkey.example.com");
        ck_assert_str_eq(r.type, "TXT");
        ck_assert_str_eq(r.selector, dkim_cases[i].sel->selector);
        /* something to publish exactly when the operator has something to do */
        bool act = r.status == IDENTITY_MISSING || r.status == IDENTITY_WRONG;
        ck_assert_msg((r.publish != NULL) == act, "%s: publish %s", dkim_cases[i].what, r.publish ? r.publish : "(none)");
        if (act) {
            char *want = util_asprintf("v=DKIM1; k=%s; p=%s", dkim_cases[i].sel->k, dkim_cases[i].sel->p);
            ck_assert_str_eq(r.publish, want);
            free(want);
        }
        ck_assert_msg((r.found != NULL) == (dkim_cases[i].ans.kind == IDENTITY_ANS_RECORDS), "%s: found",
                      dkim_cases[i].what);
        rec_clear(&r);
    }
}
END_TEST

START_TEST(test_found_long_record_keeps_both_ends)
{
    strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "v=DKIM1; k=rsa; p=HEAD");
    for (int i = 0; i < 400; i++) strbuf_puts(&sb, "x");
    strbuf_puts(&sb, "TAIL");
    identity_answer a = TXT(sb.buf);
    identity_record r;
    identity_eval_dkim(&r, "example.com", &rsa_sel, &a);
    ck_assert_int_eq(r.status, IDENTITY_WRONG);
    ck_assert_int_eq((int)strlen(r.found), IDENTITY_FOUND_MAX);
    ck_assert(strncmp(r.found, "v=DKIM1; k=rsa; p=HEAD", 22) == 0);
    ASSERT_HAS(r.found, "...");
    ck_assert(strcmp(r.found + strlen(r.found) - 4, "TAIL") == 0);
    rec_clear(&r);
    strbuf_free(&sb);
}
END_TEST

/* ---------- MX ---------- */

START_TEST(test_mx_table)
{
    const identity_mx good[] = {{"mx.kiln.example", 10}};
    const identity_mx dotted[] = {{"backup.example.net", 5}, {"MX.Kiln.Example.", 20}};
    const identity_mx other[] = {{"mx.other.example", 10}};
    const identity_mx null_mx[] = {{"", 0}};
    const struct {
        identity_answer a;
        const char *expect;
        identity_status st;
        identity_ses_status ses;
        const char *reason_part, *found, *publish;
    } c[] = {
        {{IDENTITY_ANS_RECORDS, NULL, 0, good, 1, NULL}, "mx.kiln.example", IDENTITY_PUBLISHED, IDENTITY_SES_SUCCESS,
         "the MX names mx.kiln.example", "10 mx.kiln.example", NULL},
        {{IDENTITY_ANS_RECORDS, NULL, 0, dotted, 2, NULL}, "mx.kiln.example", IDENTITY_PUBLISHED, IDENTITY_SES_SUCCESS,
         "names mx.kiln.example", "5 backup.example.net, 20 MX.Kiln.Example.", NULL},
        {{IDENTITY_ANS_RECORDS, NULL, 0, other, 1, NULL}, NULL, IDENTITY_PUBLISHED, IDENTITY_SES_SUCCESS,
         "an MX record is in place", "10 mx.other.example", NULL},
        {{IDENTITY_ANS_RECORDS, NULL, 0, other, 1, NULL}, "mx.kiln.example", IDENTITY_WRONG, IDENTITY_SES_FAILED,
         "the MX does not name mx.kiln.example", "10 mx.other.example", "10 mx.kiln.example"},
        {{IDENTITY_ANS_RECORDS, NULL, 0, null_mx, 1, NULL}, NULL, IDENTITY_WRONG, IDENTITY_SES_FAILED,
         "null MX (RFC 7505)", "0 .", "10 mta.example.test"},
        {NODATA, "mx.kiln.example", IDENTITY_MISSING, IDENTITY_SES_PENDING, "mail.example.com has no MX record", NULL,
         "10 mx.kiln.example"},
        {NXDOMAIN, NULL, IDENTITY_MISSING, IDENTITY_SES_PENDING, "does not exist (NXDOMAIN)", NULL,
         "10 mta.example.test"},
        {TEMPFAIL, NULL, IDENTITY_TEMPFAIL, IDENTITY_SES_TEMPORARY_FAILURE, "not known yet", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        identity_record r;
        identity_ses_status ses = identity_eval_mx(&r, "mail.example.com", &c[i].a, c[i].expect, "mta.example.test");
        ck_assert_msg(r.status == c[i].st && ses == c[i].ses, "case %zu: %s/%s (%s)", i,
                      identity_status_name(r.status), identity_ses_status_name(ses), r.reason);
        ASSERT_HAS(r.reason, c[i].reason_part);
        ck_assert_str_eq(r.name, "mail.example.com");
        ck_assert_str_eq(r.type, "MX");
        if (c[i].found) ck_assert_str_eq(r.found, c[i].found);
        else ck_assert_ptr_null(r.found);
        if (c[i].publish) ck_assert_str_eq(r.publish, c[i].publish);
        else ck_assert_ptr_null(r.publish);
        rec_clear(&r);
    }
}
END_TEST

/* ---------- SPF ---------- */

static const struct {
    const char *what;
    identity_answer a;
    const char *ips[3];
    identity_status want;
    const char *reason_part;
    const char *publish;         /* NULL: nothing to publish */
} spf_cases[] = {
    {"ip4 exact", TXT("v=spf1 ip4:192.0.2.10 -all"), {"192.0.2.10"}, IDENTITY_PUBLISHED,
     "authorizes every pool IP: 192.0.2.10 (ip4:192.0.2.10)", NULL},
    {"CIDR /24 covers both", TXT("v=spf1 ip4:192.0.2.0/24 -all"), {"192.0.2.10", "192.0.2.200"}, IDENTITY_PUBLISHED,
     "192.0.2.200 (ip4:192.0.2.0/24)", NULL},
    {"CIDR /24 misses the next /24", TXT("v=spf1 ip4:192.0.2.0/24 -all"), {"192.0.3.1"}, IDENTITY_WRONG,
     "does not authorize pool IP 192.0.3.1 (-all)", "v=spf1 ip4:192.0.3.1 ip4:192.0.2.0/24 -all"},
    {"CIDR /27 edge", TXT("v=spf1 ip4:192.0.2.32/27 ~all"), {"192.0.2.63", "192.0.2.64"}, IDENTITY_WRONG,
     "192.0.2.64 (~all)", "v=spf1 ip4:192.0.2.64 ip4:192.0.2.32/27 ~all"},
    {"IPv6 /32", TXT("v=spf1 ip6:2001:db8::/32 ip4:192.0.2.10 -all"), {"2001:db8:5::25", "192.0.2.10"},
     IDENTITY_PUBLISHED, "2001:db8:5::25 (ip6:2001:db8::/32)", NULL},
    {"IPv6 outside", TXT("v=spf1 ip6:2001:db8::/32 -all"), {"2001:db9::1"}, IDENTITY_WRONG,
     "does not authorize pool IP 2001:db9::1", "v=spf1 ip6:2001:db9::1 ip6:2001:db8::/32 -all"},
    {"IPv4 address vs ip6 mechanism", TXT("v=spf1 ip6:::/0 -all"), {"192.0.2.10"}, IDENTITY_WRONG,
     "'ip6:::/0' authorizes every host", "v=spf1 ip4:192.0.2.10 -all"},
    {"IPv4-mapped pool address", TXT("v=spf1 ip4:192.0.2.10 -all"), {"::ffff:192.0.2.10"}, IDENTITY_PUBLISHED,
     "192.0.2.10 (ip4:192.0.2.10)", NULL},
    {"one pool IP left out", TXT("v=spf1 ip4:192.0.2.10 -all"), {"192.0.2.10", "198.51.100.7"}, IDENTITY_WRONG,
     "does not authorize pool IP 198.51.100.7 (-all)", "v=spf1 ip4:198.51.100.7 ip4:192.0.2.10 -all"},
    {"no all: neutral", TXT("v=spf1 ip4:192.0.2.10"), {"198.51.100.7"}, IDENTITY_WRONG,
     "198.51.100.7 (no mechanism matches)", "v=spf1 ip4:198.51.100.7 ip4:192.0.2.10"},
    {"+all", TXT("v=spf1 ip4:192.0.2.10 +all"), {"192.0.2.10"}, IDENTITY_WRONG,
     "'+all' authorizes every host on the internet to send as mail.example.com", "v=spf1 ip4:192.0.2.10 ~all"},
    {"bare all", TXT("v=spf1 all"), {"192.0.2.10"}, IDENTITY_WRONG, "'all' authorizes every host",
     "v=spf1 ~all"},
    {"ip4:0.0.0.0/0", TXT("v=spf1 ip4:0.0.0.0/0 -all"), {"192.0.2.10"}, IDENTITY_WRONG,
     "'ip4:0.0.0.0/0' authorizes every host", "v=spf1 -all"},
    {"two v=spf1 records", TXT("v=spf1 ip4:192.0.2.10 -all", "v=spf1 include:_spf.example.net -all"), {"192.0.2.10"},
     IDENTITY_WRONG, "2 v=spf1 records: receivers see a permanent error", "v=spf1 ip4:192.0.2.10 -all"},
    {"include only", TXT("v=spf1 include:_spf.example.net -all"), {"192.0.2.10"}, IDENTITY_UNKNOWN,
     "not checked: 192.0.2.10 depends on include:_spf.example.net (kiln does not follow",
     "v=spf1 ip4:192.0.2.10 include:_spf.example.net -all"},
    {"mx then -all", TXT("v=spf1 mx -all"), {"192.0.2.10"}, IDENTITY_UNKNOWN, "192.0.2.10 depends on mx",
     "v=spf1 ip4:192.0.2.10 mx -all"},
    {"redirect", TXT("v=spf1 redirect=_spf.example.net"), {"192.0.2.10"}, IDENTITY_UNKNOWN,
     "depends on redirect=_spf.example.net", "v=spf1 ip4:192.0.2.10 redirect=_spf.example.net"},
    {"include then the IP itself", TXT("v=spf1 include:_spf.example.net ip4:192.0.2.10 -all"), {"192.0.2.10"},
     IDENTITY_PUBLISHED, "192.0.2.10 (ip4:192.0.2.10)", NULL},
    {"-include then the IP", TXT("v=spf1 -include:bad.example.net ip4:192.0.2.10 -all"), {"192.0.2.10"},
     IDENTITY_UNKNOWN, "depends on -include:bad.example.net", "v=spf1 ip4:192.0.2.10 -include:bad.example.net ip4:192.0.2.10 -all"},
    {"among other TXT records, modifiers, upper case", TXT("google-site-verification=abc", "V=SPF1 IP4:192.0.2.10 exp=explain._spf.example.com -ALL"),
     {"192.0.2.10"}, IDENTITY_PUBLISHED, "192.0.2.10 (IP4:192.0.2.10)", NULL},
    {"bad address", TXT("v=spf1 ip4:300.1.2.3 -all"), {"192.0.2.10"}, IDENTITY_WRONG,
     "the SPF record is invalid ('ip4:300.1.2.3' is not a valid mechanism)", "v=spf1 ip4:192.0.2.10 -all"},
    {"bad prefix", TXT("v=spf1 ip4:192.0.2.0/33 -all"), {"192.0.2.10"}, IDENTITY_WRONG, "is not a valid mechanism",
     "v=spf1 ip4:192.0.2.10 -all"},
    {"unknown mechanism", TXT("v=spf1 ip4:192.0.2.10 foo -all"), {"192.0.2.10"}, IDENTITY_WRONG,
     "'foo' is not a valid mechanism", "v=spf1 ip4:192.0.2.10 -all"},
    {"v=spf10 is not SPF", TXT("v=spf10 ip4:192.0.2.10"), {"192.0.2.10", "2001:db8::25"}, IDENTITY_MISSING,
     "no SPF record (v=spf1) among the TXT records", "v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 -all"},
    {"NXDOMAIN", NXDOMAIN, {"192.0.2.10", "2001:db8::25"}, IDENTITY_MISSING, "does not exist (NXDOMAIN)",
     "v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 -all"},
    {"lookup failed", TEMPFAIL, {"192.0.2.10"}, IDENTITY_TEMPFAIL, "not known yet", NULL},
    {"no pool IPs", TXT("v=spf1 -all"), {NULL}, IDENTITY_UNKNOWN, "the sending pool has no IP addresses", NULL},
};

START_TEST(test_spf_table)
{
    for (size_t i = 0; i < sizeof spf_cases / sizeof spf_cases[0]; i++) {
        size_t n = 0;
        while (n < 3 && spf_cases[i].ips[n]) n++;
        identity_record r;
        identity_eval_spf(&r, "mail.example.com", &spf_cases[i].a, spf_cases[i].ips, n);
        ck_assert_msg(r.status == spf_cases[i].want, "%s: %s, want %s (%s)", spf_cases[i].what,
                      identity_status_name(r.status), identity_status_name(spf_cases[i].want), r.reason);
        ck_assert_msg(strstr(r.reason, spf_cases[i].reason_part), "%s: reason \"%s\" lacks \"%s\"", spf_cases[i].what,
                      r.reason, spf_cases[i].reason_part);
        if (spf_cases[i].publish)
            ck_assert_msg(r.publish && strcmp(r.publish, spf_cases[i].publish) == 0, "%s: publish \"%s\", want \"%s\"",
                          spf_cases[i].what, r.publish ? r.publish : "(none)", spf_cases[i].publish);
        else
            ck_assert_msg(!r.publish, "%s: publish \"%s\"", spf_cases[i].what, r.publish);
        ck_assert_str_eq(r.name, "mail.example.com");
        rec_clear(&r);
    }
}
END_TEST

/* ---------- DMARC ---------- */

static const struct {
    const char *what;
    const char *domain;
    bool signing;
    identity_ses_status dkim;
    const char *mail_from;
    identity_status spf;
    identity_answer at_domain, at_org;
    identity_status want;
    const char *name, *reason_part;
    bool publish;
} dmarc_cases[] = {
    {"reject, unsigned, foreign MAIL FROM", "example.com", false, IDENTITY_SES_NOT_STARTED, "bounces.example.net",
     IDENTITY_PUBLISHED, TXT("v=DMARC1; p=reject"), NXDOMAIN, IDENTITY_WRONG, "_dmarc.example.com",
     "DMARC p=reject but kiln would send unaligned mail: kiln does not DKIM-sign for example.com; MAIL FROM domain "
     "bounces.example.net is not example.com or a subdomain of it", false},
    {"reject, unsigned, no MAIL FROM domain", "example.com", false, IDENTITY_SES_NOT_STARTED, NULL, IDENTITY_MISSING,
     TXT("v=DMARC1; p=reject; rua=mailto:d@example.com"), NXDOMAIN, IDENTITY_WRONG, "_dmarc.example.com",
     "no custom MAIL FROM domain", false},
    {"reject, signed and keys live", "example.com", true, IDENTITY_SES_SUCCESS, NULL, IDENTITY_MISSING,
     TXT("v=DMARC1; p=reject"), NXDOMAIN, IDENTITY_PUBLISHED, "_dmarc.example.com",
     "p=reject; kiln's mail is aligned (DKIM-signed with d=example.com", false},
    {"reject, signed but key record wrong", "example.com", true, IDENTITY_SES_FAILED, NULL, IDENTITY_MISSING,
     TXT("v=DMARC1; p=reject"), NXDOMAIN, IDENTITY_WRONG, "_dmarc.example.com",
     "DKIM signatures will not verify (key records FAILED)", false},
    {"quarantine, aligned MAIL FROM subdomain with SPF", "example.com", false, IDENTITY_SES_NOT_STARTED,
     "mail.example.com", IDENTITY_PUBLISHED, TXT("v=DMARC1; p=quarantine"), NXDOMAIN, IDENTITY_PUBLISHED,
     "_dmarc.example.com", "SPF-aligned through MAIL FROM domain mail.example.com", false},
    {"strict aspf and a subdomain", "example.com", false, IDENTITY_SES_NOT_STARTED, "mail.example.com",
     IDENTITY_PUBLISHED, TXT("v=DMARC1; p=reject; aspf=s"), NXDOMAIN, IDENTITY_WRONG, "_dmarc.example.com",
     "MAIL FROM domain mail.example.com is not example.com (aspf=s)", false},
    {"aligned MAIL FROM but SPF without the pool", "example.com", false, IDENTITY_SES_NOT_STARTED, "mail.example.com",
     IDENTITY_WRONG, TXT("v=DMARC1; p=reject"), NXDOMAIN, IDENTITY_WRONG, "_dmarc.example.com",
     "SPF of MAIL FROM domain mail.example.com does not pass for the pool (WRONG)", false},
    {"aligned MAIL FROM, SPF not followed", "example.com", false, IDENTITY_SES_NOT_STARTED, "mail.example.com",
     IDENTITY_UNKNOWN, TXT("v=DMARC1; p=reject"), NXDOMAIN, IDENTITY_UNKNOWN, "_dmarc.example.com",
     "kiln's alignment is not confirmed", false},
    {"lookalike is not a subdomain", "example.com", false, IDENTITY_SES_NOT_STARTED, "badexample.com",
     IDENTITY_PUBLISHED, TXT("v=DMARC1; p=reject"), NXDOMAIN, IDENTITY_WRONG, "_dmarc.example.com",
     "badexample.com is not example.com or a subdomain of it", false},
    {"p=none", "example.com", false, IDENTITY_SES_NOT_STARTED, NULL, IDENTITY_MISSING,
     TXT("v=DMARC1; p=none; rua=mailto:d@example.com"), NXDOMAIN, IDENTITY_PUBLISHED, "_dmarc.example.com",
     "p=none: monitoring only; kiln's mail would not be aligned", false},
    {"sp= of the organizational domain", "news.example.com", false, IDENTITY_SES_NOT_STARTED, NULL,
     IDENTITY_MISSING, NXDOMAIN, TXT("v=DMARC1; p=none; sp=reject"), IDENTITY_WRONG, "_dmarc.example.com",
     "DMARC sp=reject (from the organizational domain example.com) but kiln would send unaligned mail", false},
    {"p= of the organizational domain without sp=", "news.example.com", true, IDENTITY_SES_SUCCESS, NULL,
     IDENTITY_MISSING, TXT("some-other=txt"), TXT("v=DMARC1; p=quarantine"), IDENTITY_PUBLISHED, "_dmarc.example.com",
     "p=quarantine (from the organizational domain example.com); kiln's mail is aligned", false},
    {"missing at both", "news.example.com", false, IDENTITY_SES_NOT_STARTED, NULL, IDENTITY_MISSING, NXDOMAIN,
     NODATA, IDENTITY_MISSING, "_dmarc.news.example.com",
     "no DMARC record at _dmarc.news.example.com nor at _dmarc.example.com", true},
    {"missing", "example.com", false, IDENTITY_SES_NOT_STARTED, NULL, IDENTITY_MISSING, NXDOMAIN, NXDOMAIN,
     IDENTITY_MISSING, "_dmarc.example.com", "no DMARC record at _dmarc.example.com", true},
    {"two records", "example.com", false, IDENTITY_SES_NOT_STARTED, NULL, IDENTITY_MISSING,
     TXT("v=DMARC1; p=none", "v=DMARC1; p=reject"), NXDOMAIN, IDENTITY_WRONG, "_dmarc.example.com",
     "2 DMARC records at _dmarc.example.com: receivers apply none of them", false},
    {"no p=", "example.com", false, IDENTITY_SES_NOT_STARTED, NULL, IDENTITY_MISSING,
     TXT("v=DMARC1; rua=mailto:d@example.com"), NXDOMAIN, IDENTITY_WRONG, "_dmarc.example.com",
     "no valid p= (none, quarantine or reject)", false},
    {"lookup failed", "example.com", false, IDENTITY_SES_NOT_STARTED, NULL, IDENTITY_MISSING, TEMPFAIL, NXDOMAIN,
     IDENTITY_TEMPFAIL, "_dmarc.example.com", "not known yet", false},
    {"DKIM lookup failed under p=quarantine", "example.com", true, IDENTITY_SES_TEMPORARY_FAILURE, NULL,
     IDENTITY_MISSING, TXT("v=DMARC1; p=quarantine"), NXDOMAIN, IDENTITY_UNKNOWN, "_dmarc.example.com",
     "the DKIM key records could not be looked up", false},
};

START_TEST(test_dmarc_table)
{
    for (size_t i = 0; i < sizeof dmarc_cases / sizeof dmarc_cases[0]; i++) {
        identity_dmarc_ctx ctx = {dmarc_cases[i].domain, dmarc_cases[i].signing, dmarc_cases[i].dkim,
                                  dmarc_cases[i].mail_from, dmarc_cases[i].spf};
        char *org = identity_org_domain(dmarc_cases[i].domain);
        identity_record r;
        identity_eval_dmarc(&r, &ctx, &dmarc_cases[i].at_domain, org, &dmarc_cases[i].at_org);
        free(org);
        ck_assert_msg(r.status == dmarc_cases[i].want, "%s: %s, want %s (%s)", dmarc_cases[i].what,
                      identity_status_name(r.status), identity_status_name(dmarc_cases[i].want), r.reason);
        ck_assert_msg(strstr(r.reason, dmarc_cases[i].reason_part), "%s: reason \"%s\" lacks \"%s\"",
                      dmarc_cases[i].what, r.reason, dmarc_cases[i].reason_part);
        ck_assert_str_eq(r.name, dmarc_cases[i].name);
        if (dmarc_cases[i].publish) {
            char *want = util_asprintf("v=DMARC1; p=none; rua=mailto:postmaster@%s", dmarc_cases[i].domain);
            ck_assert_str_eq(r.publish, want);
            free(want);
        } else {
            ck_assert_ptr_null(r.publish);
        }
        rec_clear(&r);
    }
}
END_TEST

START_TEST(test_domains)
{
    char *s;
    ck_assert_str_eq((s = identity_org_domain("a.b.example.com")), "example.com");
    free(s);
    ck_assert_str_eq((s = identity_org_domain("example.com")), "example.com");
    free(s);
    ck_assert_str_eq((s = identity_org_domain("localhost")), "localhost");
    free(s);
    ck_assert_str_eq((s = identity_domain_of("Sender@News.Example.COM.")), "news.example.com");
    free(s);
    ck_assert_str_eq((s = identity_domain_of("Example.com")), "example.com");
    free(s);
}
END_TEST

/* ---------- the whole verdict and its reports ---------- */

static const identity_dkim_selector two_sels[] = {
    {"s1", "rsa", "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey"},
    {"e1", "ed25519", "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
};
static const char *const pool[] = {"192.0.2.10", "2001:db8::25"};

static identity_check_req base_req(void)
{
    identity_check_req q = {
        .identity = "example.com",
        .selectors = two_sels,
        .nselectors = 2,
        .signing_enabled = true,
        .mail_from_domain = "mail.example.com",
        .mail_from_mx = "mx.kiln.example",
        .server_hostname = "mta.example.test",
        .pool_ips = pool,
        .npool_ips = 2,
    };
    return q;
}

static const identity_mx kiln_mx[] = {{"mx.kiln.example", 10}};

START_TEST(test_assemble_all_published)
{
    identity_check_req q = base_req();
    identity_answer dk[2] = {TXT("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkey"),
                             TXT("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")};
    identity_answers a = {dk, {IDENTITY_ANS_RECORDS, NULL, 0, kiln_mx, 1, NULL},
                          TXT("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"), TXT("v=DMARC1; p=reject"), NXDOMAIN};
    identity_check_result *r = identity_check_assemble(&q, &a);
    ck_assert_int_eq(r->nrecords, 5);
    for (size_t i = 0; i < r->nrecords; i++)
        ck_assert_msg(r->records[i].status == IDENTITY_PUBLISHED, "%s: %s (%s)", r->records[i].name,
                      identity_status_name(r->records[i].status), r->records[i].reason);
    ck_assert_int_eq(r->dkim_status, IDENTITY_SES_SUCCESS);
    ck_assert_int_eq(r->mail_from_status, IDENTITY_SES_SUCCESS);
    ck_assert_ptr_nonnull(identity_check_find(r, IDENTITY_REC_DKIM, "e1"));
    ck_assert_str_eq(identity_check_find(r, IDENTITY_REC_DKIM, "e1")->name, "e1._domainkey.example.com");
    ck_assert_str_eq(identity_check_find(r, IDENTITY_REC_SPF, NULL)->name, "mail.example.com");
    ck_assert_ptr_null(identity_check_find(r, IDENTITY_REC_DKIM, "s9"));

    identity_json_opts o = {.verified_for_sending = true, .easy_dkim = true, .current_key_bits = 2048,
                            .next_key_bits = 2048, .last_key_generation_s = 1767225600, .reject_on_mx_failure = true};
    json_t *j = identity_check_to_json(r, &o);
    char *txt = json_dumps(j, JSON_SORT_KEYS);
    ck_assert_str_eq(json_string_value(json_object_get(j, "IdentityType")), "DOMAIN");
    ck_assert(json_is_true(json_object_get(j, "FeedbackForwardingStatus")));
    ck_assert(json_is_true(json_object_get(j, "VerifiedForSendingStatus")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "VerificationStatus")), "SUCCESS");
    json_t *dk_j = json_object_get(j, "DkimAttributes");
    ck_assert(json_is_true(json_object_get(dk_j, "SigningEnabled")));
    ck_assert_str_eq(json_string_value(json_object_get(dk_j, "Status")), "SUCCESS");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(dk_j, "Tokens"), 0)), "s1");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(dk_j, "Tokens"), 1)), "e1");
    ck_assert_str_eq(json_string_value(json_object_get(dk_j, "SigningAttributesOrigin")), "AWS_SES");
    ck_assert_str_eq(json_string_value(json_object_get(dk_j, "CurrentSigningKeyLength")), "RSA_2048_BIT");
    ck_assert_str_eq(json_string_value(json_object_get(dk_j, "NextSigningKeyLength")), "RSA_2048_BIT");
    ck_assert_int_eq(json_integer_value(json_object_get(dk_j, "LastKeyGenerationTimestamp")), 1767225600);
    json_t *mf = json_object_get(j, "MailFromAttributes");
    ck_assert_str_eq(json_string_value(json_object_get(mf, "MailFromDomain")), "mail.example.com");
    ck_assert_str_eq(json_string_value(json_object_get(mf, "MailFromDomainStatus")), "SUCCESS");
    ck_assert_str_eq(json_string_value(json_object_get(mf, "BehaviorOnMxFailure")), "REJECT_MESSAGE");
    /* nothing but botocore's GetEmailIdentityResponse members, and kiln's own object */
    static const char *const top[] = {"IdentityType", "FeedbackForwardingStatus", "VerifiedForSendingStatus",
                                      "VerificationStatus", "DkimAttributes", "MailFromAttributes", "kiln"};
    ck_assert_int_eq(json_object_size(j), 7);
    for (size_t i = 0; i < 7; i++) ck_assert_msg(json_object_get(j, top[i]), "%s missing in %s", top[i], txt);
    ck_assert_int_eq(json_object_size(dk_j), 7);
    ck_assert_int_eq(json_object_size(mf), 3);
    json_t *recs = json_object_get(json_object_get(j, "kiln"), "Records");
    ck_assert_int_eq(json_array_size(recs), 5);
    json_t *r0 = json_array_get(recs, 0);
    ck_assert_str_eq(json_string_value(json_object_get(r0, "Name")), "s1._domainkey.example.com");
    ck_assert_str_eq(json_string_value(json_object_get(r0, "Type")), "TXT");
    ck_assert_str_eq(json_string_value(json_object_get(r0, "Status")), "PUBLISHED");
    ck_assert_str_eq(json_string_value(json_object_get(r0, "Selector")), "s1");
    ASSERT_HAS(json_string_value(json_object_get(r0, "Found")), "v=DKIM1; k=rsa; p=MIIB");
    ck_assert_ptr_null(json_object_get(r0, "Publish"));
    free(txt);
    json_decref(j);

    char *text = identity_check_to_text(r);
    ASSERT_HAS(text, "identity example.com (domain): DKIM SUCCESS, signing enabled; MAIL FROM mail.example.com SUCCESS\n");
    ASSERT_HAS(text, "PUBLISHED  s1._domainkey.example.com  TXT   the published key is kiln's (k=rsa)\n");
    ASSERT_HAS(text, "PUBLISHED  mail.example.com           MX    the MX names mx.kiln.example\n");
    ck_assert_ptr_null(strstr(text, "publish:"));
    free(text);
    identity_check_result_free(r);
}
END_TEST

START_TEST(test_assemble_missing_and_wrong)
{
    identity_check_req q = base_req();
    q.identity = "Sender@Example.com";
    q.signing_enabled = false;
    q.mail_from_domain = "bounce.example.net";
    q.mail_from_mx = NULL;
    identity_answer dk[2] = {TXT("v=DKIM1; k=rsa; p=MIIBold"), NXDOMAIN};
    identity_answers a = {dk, NODATA, TXT("v=spf1 ip4:192.0.2.10 -all"), TXT("v=DMARC1; p=reject"), NXDOMAIN};
    identity_check_result *r = identity_check_assemble(&q, &a);
    ck_assert(r->is_address);
    ck_assert_str_eq(r->domain, "example.com");
    ck_assert_int_eq(r->dkim_status, IDENTITY_SES_FAILED);
    ck_assert_int_eq(r->mail_from_status, IDENTITY_SES_PENDING);
    ck_assert_int_eq(identity_check_find(r, IDENTITY_REC_DKIM, "s1")->status, IDENTITY_WRONG);
    ck_assert_int_eq(identity_check_find(r, IDENTITY_REC_DKIM, "e1")->status, IDENTITY_MISSING);
    ck_assert_int_eq(identity_check_find(r, IDENTITY_REC_MX, NULL)->status, IDENTITY_MISSING);
    const identity_record *spf = identity_check_find(r, IDENTITY_REC_SPF, NULL);
    ck_assert_int_eq(spf->status, IDENTITY_WRONG);
    ASSERT_HAS(spf->reason, "does not authorize pool IP 2001:db8::25 (-all)");
    const identity_record *dm = identity_check_find(r, IDENTITY_REC_DMARC, NULL);
    ck_assert_int_eq(dm->status, IDENTITY_WRONG);
    ASSERT_HAS(dm->reason, "DMARC p=reject but kiln would send unaligned mail");

    json_t *j = identity_check_to_json(r, &(identity_json_opts){.verified_for_sending = true, .current_key_bits = 3072});
    ck_assert_str_eq(json_string_value(json_object_get(j, "IdentityType")), "EMAIL_ADDRESS");
    json_t *dk_j = json_object_get(j, "DkimAttributes");
    ck_assert(json_is_false(json_object_get(dk_j, "SigningEnabled")));
    ck_assert_str_eq(json_string_value(json_object_get(dk_j, "Status")), "FAILED");
    ck_assert_str_eq(json_string_value(json_object_get(dk_j, "SigningAttributesOrigin")), "EXTERNAL");
    ck_assert_ptr_null(json_object_get(dk_j, "CurrentSigningKeyLength"));   /* 3072: no SES value */
    ck_assert_ptr_null(json_object_get(dk_j, "NextSigningKeyLength"));
    ck_assert_ptr_null(json_object_get(dk_j, "LastKeyGenerationTimestamp"));
    json_t *mf = json_object_get(j, "MailFromAttributes");
    ck_assert_str_eq(json_string_value(json_object_get(mf, "MailFromDomainStatus")), "PENDING");
    ck_assert_str_eq(json_string_value(json_object_get(mf, "BehaviorOnMxFailure")), "USE_DEFAULT_VALUE");
    json_t *recs = json_object_get(json_object_get(j, "kiln"), "Records");
    json_t *e1 = json_array_get(recs, 1);
    ck_assert_str_eq(json_string_value(json_object_get(e1, "Status")), "MISSING");
    ck_assert_ptr_null(json_object_get(e1, "Found"));
    json_t *pub = json_object_get(e1, "Publish");
    ck_assert_str_eq(json_string_value(json_object_get(pub, "Name")), "e1._domainkey.example.com");
    ck_assert_str_eq(json_string_value(json_object_get(pub, "Type")), "TXT");
    ck_assert_str_eq(json_string_value(json_object_get(pub, "Value")),
                     "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    json_t *mxj = json_object_get(json_array_get(recs, 2), "Publish");
    ck_assert_str_eq(json_string_value(json_object_get(mxj, "Value")), "10 mta.example.test");
    json_decref(j);

    char *text = identity_check_to_text(r);
    ASSERT_HAS(text, "identity Sender@Example.com (address): DKIM FAILED, signing disabled; MAIL FROM bounce.example.net PENDING\n");
    ASSERT_HAS(text, "WRONG      s1._domainkey.example.com  TXT   the published key does not match the key kiln signs with\n");
    ASSERT_HAS(text, "found: v=DKIM1; k=rsa; p=MIIBold\n");
    ASSERT_HAS(text, "MISSING    e1._domainkey.example.com  TXT   no DKIM key record: e1._domainkey.example.com does not exist");
    ASSERT_HAS(text, "publish: e1._domainkey.example.com TXT \"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n");
    ASSERT_HAS(text, "publish: bounce.example.net MX 10 mta.example.test\n");
    ASSERT_HAS(text, "publish: bounce.example.net TXT \"v=spf1 ip6:2001:db8::25 ip4:192.0.2.10 -all\"\n");
    ck_assert_ptr_null(strstr(text, "publish: _dmarc"));    /* the fix is kiln's, not a record */
    free(text);
    identity_check_result_free(r);
}
END_TEST

START_TEST(test_assemble_no_keys_no_mail_from)
{
    identity_check_req q = {.identity = "news.example.com", .signing_enabled = false};
    identity_answers a = {NULL, NODATA, NODATA, TEMPFAIL, NXDOMAIN};
    identity_check_result *r = identity_check_assemble(&q, &a);
    ck_assert_int_eq(r->nrecords, 1);
    ck_assert_int_eq(r->dkim_status, IDENTITY_SES_NOT_STARTED);
    ck_assert_int_eq(r->records[0].status, IDENTITY_TEMPFAIL);   /* not WRONG, not MISSING */
    json_t *j = identity_check_to_json(r, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "DkimAttributes"), "Status")), "NOT_STARTED");
    ck_assert_ptr_null(json_object_get(json_object_get(j, "DkimAttributes"), "Tokens"));
    ck_assert_ptr_null(json_object_get(j, "MailFromAttributes"));   /* SES requires all three of its fields */
    ck_assert(json_is_false(json_object_get(j, "VerifiedForSendingStatus")));
    json_decref(j);
    identity_check_result_free(r);

    /* a DKIM lookup failure is TEMPORARY_FAILURE, never FAILED */
    identity_answer dk[1] = {TEMPFAIL};
    q.selectors = two_sels;
    q.nselectors = 1;
    identity_answers a2 = {dk, NODATA, NODATA, NXDOMAIN, NXDOMAIN};
    r = identity_check_assemble(&q, &a2);
    ck_assert_int_eq(r->dkim_status, IDENTITY_SES_TEMPORARY_FAILURE);
    identity_check_result_free(r);
}
END_TEST

START_TEST(test_text_long_txt_split)
{
    /* a 2048-bit key's p= is 392 characters: more than one DNS character-string */
    strbuf key;
    strbuf_init(&key);
    for (int i = 0; i < 392; i++) strbuf_puts(&key, i % 2 ? "A" : "b");
    identity_dkim_selector sel = {"s2048", "rsa", key.buf};
    identity_check_req q = {.identity = "example.com", .selectors = &sel, .nselectors = 1};
    identity_answer dk[1] = {NXDOMAIN};
    identity_answers a = {dk, NODATA, NODATA, TXT("v=DMARC1; p=none"), NXDOMAIN};
    identity_check_result *r = identity_check_assemble(&q, &a);
    char *text = identity_check_to_text(r);
    const char *pub = strstr(text, "publish: s2048._domainkey.example.com TXT \"v=DKIM1; k=rsa; p=");
    ck_assert_ptr_nonnull(pub);
    const char *q1 = strchr(pub, '"');
    const char *q2 = strchr(q1 + 1, '"');
    ck_assert_int_eq((int)(q2 - q1 - 1), 255);          /* first string: 255 bytes */
    ck_assert(q2[1] == ' ' && q2[2] == '"');
    const char *q4 = strchr(q2 + 3, '"');
    ck_assert_int_eq((int)(q4 - q2 - 3), (int)strlen("v=DKIM1; k=rsa; p=") + 392 - 255);
    ck_assert(q4[1] == '\n');
    free(text);
    identity_check_result_free(r);
    strbuf_free(&key);
}
END_TEST

static Suite *identity_suite(void)
{
    Suite *s = suite_create("identity_check");
    TCase *t = tcase_create("eval");
    tcase_add_test(t, test_dkim_table);
    tcase_add_test(t, test_found_long_record_keeps_both_ends);
    tcase_add_test(t, test_mx_table);
    tcase_add_test(t, test_spf_table);
    tcase_add_test(t, test_dmarc_table);
    tcase_add_test(t, test_domains);
    suite_add_tcase(s, t);
    TCase *w = tcase_create("verdict");
    tcase_add_test(w, test_assemble_all_published);
    tcase_add_test(w, test_assemble_missing_and_wrong);
    tcase_add_test(w, test_assemble_no_keys_no_mail_from);
    tcase_add_test(w, test_text_long_txt_split);
    suite_add_tcase(s, w);
    return s;
}

TESTLIB_SUITES(identity_suite);
