/* test_dns.c — MX resolution (mta/dns.c): the pure ordering with a deterministic random
 * source, then real lookups over loopback against a dnsmasq child process started by the
 * tests (MX order, equal preferences, implicit A/AAAA fallback, also behind a CNAME, RFC 7505 null MX,
 * NXDOMAIN, IPv6, dangling MX hosts, REFUSED), the cache (answers survive the server's
 * death while their TTL holds), dns_query_cancel, temporary failures against a UDP socket
 * that never answers (timeouts, shared queries), reconfiguration and dns_free with lookups
 * pending.
 * Every loop run is bounded by a guard timer; every child is ended by its PID. */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <check.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mta/dns.h"
#include "base/util.h"
#include "tests/integration/dnslab.h"
#include "tests/unit/testlib.h"

#define DNSMASQ DNSLAB_DNSMASQ
#define GUARD_S 10.0

/* ---------- dns_order_mx ---------- */

typedef struct seq_rnd {         /* returns vals[0], vals[1], ... cyclically */
    const uint32_t *vals;
    size_t n, i;
} seq_rnd;

static uint32_t rnd_seq(void *arg)
{
    seq_rnd *s = arg;
    return s->vals[s->i++ % s->n];
}

static char *order_text(const dns_mx_host *h, size_t n)
{
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < n; i++) strbuf_printf(&sb, "%s%s/%d", i ? " " : "", h[i].name, h[i].preference);
    return strbuf_steal(&sb);
}

static const struct {
    const char *names[6];
    int prefs[6];
    uint32_t rnd[4];
    const char *want;
} order_cases[] = {
    {{"c", "a", "b"}, {30, 10, 20}, {0}, "a/10 b/20 c/30"},
    {{"a", "b", "c"}, {10, 20, 30}, {0}, "a/10 b/20 c/30"},
    {{"big", "zero"}, {65535, 0}, {0}, "zero/0 big/65535"},
    {{"only"}, {5}, {0}, "only/5"},
    /* equal preferences: Fisher-Yates, rnd % 2 == 1 keeps, == 0 swaps the pair */
    {{"x", "y"}, {10, 10}, {1}, "x/10 y/10"},
    {{"x", "y"}, {10, 10}, {0}, "y/10 x/10"},
    /* shuffling never crosses preference groups */
    {{"b1", "a", "b2", "c"}, {20, 10, 20, 30}, {0}, "a/10 b2/20 b1/20 c/30"},
    {{"b1", "a", "b2", "c"}, {20, 10, 20, 30}, {1}, "a/10 b1/20 b2/20 c/30"},
};

START_TEST(test_order_table)
{
    for (size_t c = 0; c < sizeof order_cases / sizeof order_cases[0]; c++) {
        dns_mx_host h[6];
        size_t n = 0;
        memset(h, 0, sizeof h);
        while (n < 6 && order_cases[c].names[n]) {
            h[n].name = (char *)order_cases[c].names[n];
            h[n].preference = order_cases[c].prefs[n];
            n++;
        }
        seq_rnd r = {order_cases[c].rnd, 1, 0};
        dns_order_mx(h, n, rnd_seq, &r);
        char *got = order_text(h, n);
        ck_assert_msg(strcmp(got, order_cases[c].want) == 0, "case %zu: got \"%s\", want \"%s\"", c, got,
                      order_cases[c].want);
        free(got);
    }
}
END_TEST

static uint32_t rnd_lcg(void *arg)
{
    uint64_t *s = arg;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

START_TEST(test_order_equal_both_orders)
{
    /* Three exchangers of equal preference behind a better one: with a varying random
     * source every exchanger leads the group sometimes, the best one always comes first. */
    uint64_t seed = 42;
    int lead[3] = {0, 0, 0};
    for (int i = 0; i < 300; i++) {
        dns_mx_host h[4] = {{"m0", 20, NULL, 0, false}, {"m1", 20, NULL, 0, false}, {"best", 5, NULL, 0, false}, {"m2", 20, NULL, 0, false}};
        dns_order_mx(h, 4, rnd_lcg, &seed);
        ck_assert_str_eq(h[0].name, "best");
        for (int j = 1; j < 4; j++) ck_assert_int_eq(h[j].preference, 20);
        lead[h[1].name[1] - '0']++;
    }
    for (int j = 0; j < 3; j++) ck_assert_msg(lead[j] > 50, "m%d led %d of 300 times", j, lead[j]);
}
END_TEST

/* ---------- helpers: ports, dnsmasq, the loop ---------- */

/* Drains the silent server; counts distinct query ids (one per ares_query, retries
 * reuse it) asking for NAME. */
static int count_queries(int fd, const char *name, int *ids, int *nids)
{
    unsigned char buf[512];
    ssize_t n;
    int count = 0;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 12) {
        char *q = NULL;
        long len;
        if (ares_expand_name(buf + 12, buf, (int)n, &q, &len) != ARES_SUCCESS) continue;
        int id = buf[0] << 8 | buf[1];
        bool seen = false;
        for (int i = 0; i < *nids; i++) seen |= ids[i] == id;
        if (!seen && *nids < 64) ids[(*nids)++] = id;
        if (!seen && strcmp(q, name) == 0) count++;
        ares_free_string(q);
    }
    return count;
}

static const char *const zone_args[] = {
    "--local=/test/",
    "--local-ttl=60",
    "--mx-host=two.test,mx1.two.test,10",
    "--mx-host=two.test,mx2.two.test,20",
    "--host-record=mx1.two.test,127.0.0.21",
    "--host-record=mx2.two.test,127.0.0.22",
    "--mx-host=eq.test,mxa.eq.test,5",
    "--mx-host=eq.test,mxb.eq.test,5",
    "--host-record=mxa.eq.test,127.0.0.31",
    "--host-record=mxb.eq.test,127.0.0.32",
    "--host-record=plain.test,127.0.0.30",
    "--mx-host=nullmx.test,.,0",
    "--mx-host=six.test,mx6.test,10",
    "--host-record=mx6.test,::1",
    "--mx-host=dual.test,mxd.dual.test,10",
    "--host-record=mxd.dual.test,127.0.0.40,::1",
    "--mx-host=dangling.test,nowhere.dangling.test,10",
    "--mx-host=dangling.test,gone.dangling.test,20",
    "--mx-host=partial.test,gone.partial.test,5",
    "--mx-host=partial.test,mx1.two.test,10",
    "--txt-record=txtonly.test,hello",
    "--cname=alias.test,plain.test",
};

typedef struct test_env {
    struct ev_loop *loop;
    ev_timer guard;
    bool timed_out;
    config *cfg;
    dns *d;
} test_env;

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    ((test_env *)w->data)->timed_out = true;
    ev_break(loop, EVBREAK_ALL);
}

static void env_init(test_env *e, int port, int64_t timeout_ms)
{
    memset(e, 0, sizeof *e);
    e->loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(e->loop);
    ev_timer_init(&e->guard, guard_cb, GUARD_S, 0.);
    e->guard.data = e;
    e->cfg = testlib_config_new();
    testlib_config_add_dns_server(e->cfg, "127.0.0.1", port);
    e->cfg->dns_timeout_ms = timeout_ms;
    char *err = NULL;
    e->d = dns_new(e->loop, e->cfg, NULL, &err);
    ck_assert_msg(e->d != NULL, "dns_new: %s", err ? err : "?");
}

static void env_free(test_env *e)
{
    dns_free(e->d);
    ev_timer_stop(e->loop, &e->guard);
    ev_loop_destroy(e->loop);
    config_unref(e->cfg);
}

/* What a callback saw, copied out. */
typedef struct got {
    test_env *e;
    bool called;
    bool before_return;          /* callback ran inside dns_resolve_mx */
    bool returned;
    int *pending;                /* shared counter: break the loop when it reaches 0 */
    dns_status status;
    bool implicit;
    char *hosts;                 /* "name/pref=addr,addr name/pref=addr" */
    char *error;
} got;

static void got_cb(void *arg, const dns_mx_result *r)
{
    got *g = arg;
    ck_assert_msg(!g->called, "callback called twice");
    g->called = true;
    g->before_return = !g->returned;
    g->status = r->status;
    g->implicit = r->implicit;
    g->error = util_strdup(r->error);
    strbuf sb;
    strbuf_init(&sb);
    for (size_t i = 0; i < r->nhosts; i++) {
        strbuf_printf(&sb, "%s%s/%d", i ? " " : "", r->hosts[i].name, r->hosts[i].preference);
        for (size_t j = 0; j < r->hosts[i].naddrs; j++) strbuf_printf(&sb, "%c%s", j ? ',' : '=', r->hosts[i].addrs[j]);
    }
    g->hosts = strbuf_steal(&sb);
    if (--*g->pending == 0) ev_break(g->e->loop, EVBREAK_ALL);
}

static void got_clear(got *g)
{
    free(g->hosts);
    free(g->error);
}

static void start(test_env *e, got *g, int *pending, const char *domain)
{
    memset(g, 0, sizeof *g);
    g->e = e;
    g->pending = pending;
    (*pending)++;
    dns_resolve_mx(e->d, domain, got_cb, g);
    g->returned = true;
}

static void run(test_env *e)
{
    e->timed_out = false;
    ev_timer_set(&e->guard, GUARD_S, 0.);
    ev_timer_start(e->loop, &e->guard);
    ev_run(e->loop, 0);
    ev_timer_stop(e->loop, &e->guard);
    ck_assert_msg(!e->timed_out, "no DNS answer within %.0f s", GUARD_S);
}

/* One lookup, run to completion. */
static void resolve(test_env *e, got *g, const char *domain)
{
    int pending = 0;
    start(e, g, &pending, domain);
    run(e);
    ck_assert(g->called);
    ck_assert_msg(!g->before_return, "callback ran before dns_resolve_mx returned (%s)", domain);
}

/* ---------- against dnsmasq ---------- */

static dnslab shared_dm;
static bool have_dnsmasq;

static void dm_setup(void)
{
    have_dnsmasq = access(DNSMASQ, X_OK) == 0;
    if (!have_dnsmasq) return;
    ck_assert_msg(dnslab_start(&shared_dm, zone_args, sizeof zone_args / sizeof zone_args[0]), "dnsmasq did not answer within 5 s");
}

static void dm_teardown(void)
{
    if (have_dnsmasq) dnslab_stop(&shared_dm);
}

#define NEED_DNSMASQ()                                                                   \
    do {                                                                                 \
        if (!have_dnsmasq) {                                                             \
            fprintf(stderr, "test_dns: SKIP %s: %s is not installed\n", __func__, DNSMASQ); \
            return;                                                                      \
        }                                                                                \
    } while (0)

static const struct {
    const char *domain;
    dns_status status;
    bool implicit;
    const char *hosts;           /* exact, for DNS_OK */
    const char *error_part;      /* substring of the error, for failures */
} resolve_cases[] = {
    {"two.test", DNS_OK, false, "mx1.two.test/10=127.0.0.21 mx2.two.test/20=127.0.0.22", NULL},
    {"TWO.Test.", DNS_OK, false, "mx1.two.test/10=127.0.0.21 mx2.two.test/20=127.0.0.22", NULL},
    {"plain.test", DNS_OK, true, "plain.test/0=127.0.0.30", NULL},
    {"six.test", DNS_OK, false, "mx6.test/10=::1", NULL},
    {"mx6.test", DNS_OK, true, "mx6.test/0=::1", NULL},
    /* an MX answer of a CNAME only (its target has no MX): RFC 5321 5.1's implicit MX,
     * whose A query follows the CNAME */
    {"alias.test", DNS_OK, true, "alias.test/0=127.0.0.30", NULL},
    {"dual.test", DNS_OK, false, "mxd.dual.test/10=127.0.0.40,::1", NULL},
    {"partial.test", DNS_OK, false, "mx1.two.test/10=127.0.0.21", NULL},
    {"nullmx.test", DNS_NULLMX, false, "", "null MX"},
    {"nothere.test", DNS_NXDOMAIN, false, "", "nothere.test: domain does not exist"},
    {"", DNS_NXDOMAIN, false, "", "empty domain"},
    {"dangling.test", DNS_NOHOST, false, "", "nowhere.dangling.test, gone.dangling.test"},
    {"txtonly.test", DNS_NOHOST, false, "", "txtonly.test: no MX and no A/AAAA records"},
    /* outside --local=/test/ dnsmasq has no upstream and refuses */
    {"example.org", DNS_TEMPFAIL, false, "", "example.org: MX lookup failed:"},
};

START_TEST(test_resolve_table)
{
    NEED_DNSMASQ();
    test_env e;
    env_init(&e, shared_dm.port, 2000);
    for (size_t c = 0; c < sizeof resolve_cases / sizeof resolve_cases[0]; c++) {
        got g;
        resolve(&e, &g, resolve_cases[c].domain);
        ck_assert_msg(g.status == resolve_cases[c].status, "%s: status %d, want %d (%s)", resolve_cases[c].domain,
                      g.status, resolve_cases[c].status, g.error ? g.error : "");
        ck_assert_msg(g.implicit == resolve_cases[c].implicit, "%s: implicit %d", resolve_cases[c].domain, g.implicit);
        ck_assert_msg(strcmp(g.hosts, resolve_cases[c].hosts) == 0, "%s: hosts \"%s\", want \"%s\"",
                      resolve_cases[c].domain, g.hosts, resolve_cases[c].hosts);
        if (resolve_cases[c].error_part)
            ck_assert_msg(g.error && strstr(g.error, resolve_cases[c].error_part), "%s: error \"%s\" lacks \"%s\"",
                          resolve_cases[c].domain, g.error ? g.error : "(null)", resolve_cases[c].error_part);
        else
            ck_assert_ptr_null(g.error);
        got_clear(&g);
    }
    env_free(&e);
}
END_TEST

START_TEST(test_equal_preference_both_orders)
{
    NEED_DNSMASQ();
    test_env e;
    env_init(&e, shared_dm.port, 2000);
    /* The first answer comes from dnsmasq, the rest from the cache, which is reshuffled
     * on every hit so that senders spread over equal exchangers. */
    int ab = 0, ba = 0;
    for (int i = 0; i < 40; i++) {
        got g;
        resolve(&e, &g, "eq.test");
        ck_assert_int_eq(g.status, DNS_OK);
        if (strcmp(g.hosts, "mxa.eq.test/5=127.0.0.31 mxb.eq.test/5=127.0.0.32") == 0)
            ab++;
        else if (strcmp(g.hosts, "mxb.eq.test/5=127.0.0.32 mxa.eq.test/5=127.0.0.31") == 0)
            ba++;
        else
            ck_abort_msg("unexpected hosts \"%s\"", g.hosts);
        got_clear(&g);
    }
    ck_assert_msg(ab > 0 && ba > 0, "orders seen: mxa first %d, mxb first %d", ab, ba);
    env_free(&e);
}
END_TEST

START_TEST(test_concurrent_same_domain)
{
    NEED_DNSMASQ();
    test_env e;
    env_init(&e, shared_dm.port, 2000);
    int pending = 0;
    got g[3];
    start(&e, &g[0], &pending, "two.test");
    start(&e, &g[1], &pending, "Two.Test");
    start(&e, &g[2], &pending, "plain.test");
    run(&e);
    for (int i = 0; i < 3; i++) {
        ck_assert(g[i].called);
        ck_assert(!g[i].before_return);
        ck_assert_int_eq(g[i].status, DNS_OK);
    }
    ck_assert_str_eq(g[0].hosts, "mx1.two.test/10=127.0.0.21 mx2.two.test/20=127.0.0.22");
    ck_assert_str_eq(g[1].hosts, g[0].hosts);
    ck_assert_str_eq(g[2].hosts, "plain.test/0=127.0.0.30");
    for (int i = 0; i < 3; i++) got_clear(&g[i]);
    env_free(&e);
}
END_TEST

typedef struct chain {
    test_env *e;
    got second;
    int pending;
} chain;

static void chain_cb(void *arg, const dns_mx_result *r)
{
    chain *c = arg;
    ck_assert_int_eq(r->status, DNS_OK);
    start(c->e, &c->second, &c->pending, "plain.test");   /* a lookup from inside a callback */
}

START_TEST(test_lookup_from_callback)
{
    NEED_DNSMASQ();
    test_env e;
    env_init(&e, shared_dm.port, 2000);
    chain c = {.e = &e};
    dns_resolve_mx(e.d, "two.test", chain_cb, &c);
    run(&e);
    ck_assert(c.second.called);
    ck_assert(!c.second.before_return);
    ck_assert_int_eq(c.second.status, DNS_OK);
    ck_assert_str_eq(c.second.hosts, "plain.test/0=127.0.0.30");
    got_clear(&c.second);
    env_free(&e);
}
END_TEST

/* dns_query_cancel: takes back one waiter of a shared query (the other still gets the
 * answer), a waiter cancelled by another's callback in the same dispatch (same lookup or a
 * later one), a query cancelled before it was sent; nothing matching is a no-op. */
typedef struct qwait {
    test_env *e;
    int calls;
    dns_status status;
    int *pending;
    struct qwait *victim;        /* cancelled from this one's callback */
    const char *victim_name;
    int victim_type;
} qwait;

static void qwait_cb(void *arg, const dns_answer *a)
{
    qwait *q = arg;
    q->calls++;
    q->status = a->status;
    if (q->victim) dns_query_cancel(q->e->d, q->victim_name, q->victim_type, qwait_cb, q->victim);
    if (--*q->pending == 0) ev_break(q->e->loop, EVBREAK_ALL);
}

static void quiet_run(test_env *e, double s);

START_TEST(test_query_cancel)
{
    NEED_DNSMASQ();
    test_env e;
    env_init(&e, shared_dm.port, 2000);
    int pending = 1;
    qwait kept = {.e = &e, .pending = &pending}, gone = {.e = &e, .pending = &pending};
    dns_query(e.d, "txtonly.test", ns_t_txt, qwait_cb, &gone);
    dns_query(e.d, "TXTONLY.test", ns_t_txt, qwait_cb, &kept);
    dns_query_cancel(e.d, "txtonly.test", ns_t_txt, qwait_cb, &gone);
    dns_query_cancel(e.d, "txtonly.test", ns_t_a, qwait_cb, &kept);        /* other type: no-op */
    dns_query_cancel(e.d, "nothing.test", ns_t_txt, qwait_cb, &kept);      /* no such query */
    run(&e);
    ck_assert_int_eq(kept.calls, 1);
    ck_assert_int_eq(kept.status, DNS_OK);
    ck_assert_int_eq(gone.calls, 0);

    /* Cancelled from a callback of the same lookup and of the same dispatch: the empty
     * name is answered at once (NXDOMAIN), both lookups land in one dispatch. */
    qwait first = {.e = &e, .pending = &pending}, same = {.e = &e, .pending = &pending},
          later = {.e = &e, .pending = &pending};
    first.victim = &same;
    first.victim_name = "";
    first.victim_type = ns_t_txt;
    pending = 1;
    dns_query(e.d, "", ns_t_txt, qwait_cb, &first);
    dns_query(e.d, "", ns_t_txt, qwait_cb, &same);
    run(&e);
    ck_assert_int_eq(first.calls, 1);
    ck_assert_int_eq(first.status, DNS_NXDOMAIN);
    ck_assert_int_eq(same.calls, 0);
    first.calls = 0;
    first.victim = &later;
    first.victim_type = ns_t_a;
    pending = 1;
    dns_query(e.d, "", ns_t_txt, qwait_cb, &first);
    dns_query(e.d, "", ns_t_a, qwait_cb, &later);
    run(&e);
    ck_assert_int_eq(first.calls, 1);
    quiet_run(&e, 0.2);
    ck_assert_int_eq(later.calls, 0);
    env_free(&e);
}
END_TEST

START_TEST(test_cache_outlives_server)
{
    NEED_DNSMASQ();
    dnslab dm;
    ck_assert_msg(dnslab_start(&dm, zone_args, sizeof zone_args / sizeof zone_args[0]),
                  "dnsmasq did not answer within 5 s");
    test_env e;
    env_init(&e, dm.port, 500);
    got g;
    resolve(&e, &g, "two.test");
    ck_assert_int_eq(g.status, DNS_OK);
    got_clear(&g);
    resolve(&e, &g, "nothere.test");
    ck_assert_int_eq(g.status, DNS_NXDOMAIN);
    got_clear(&g);

    dnslab_stop(&dm);

    /* The server is gone: a new name fails temporarily ... */
    resolve(&e, &g, "plain.test");
    ck_assert_int_eq(g.status, DNS_TEMPFAIL);
    ck_assert_ptr_nonnull(g.error);
    got_clear(&g);
    /* ... while the answers seen before (TTL 60 s) still come, from the loop. */
    resolve(&e, &g, "TWO.test");
    ck_assert_int_eq(g.status, DNS_OK);
    ck_assert_str_eq(g.hosts, "mx1.two.test/10=127.0.0.21 mx2.two.test/20=127.0.0.22");
    got_clear(&g);
    resolve(&e, &g, "nothere.test");
    ck_assert_int_eq(g.status, DNS_NXDOMAIN);
    ck_assert_ptr_nonnull(strstr(g.error, "does not exist"));
    got_clear(&g);
    env_free(&e);
}
END_TEST

START_TEST(test_debug_log_line)
{
    NEED_DNSMASQ();
    const char *dir = testlib_tmpdir("dns-log");
    char *path = util_asprintf("%s/kiln.log", dir);
    char *err = NULL;
    klog *lg = log_open(path, KLOG_DEBUG, &err);
    ck_assert_ptr_nonnull(lg);
    test_env e;
    env_init(&e, shared_dm.port, 2000);
    dns_free(e.d);
    e.d = dns_new(e.loop, e.cfg, lg, &err);
    ck_assert_ptr_nonnull(e.d);
    got g;
    resolve(&e, &g, "two.test");
    got_clear(&g);
    resolve(&e, &g, "nullmx.test");
    got_clear(&g);
    env_free(&e);
    log_close(lg);

    char *buf = testlib_read_file(path, NULL);
    ck_assert_ptr_nonnull(buf);
    free(path);
    testlib_tmpdir_remove(dir);
    ck_assert_msg(strstr(buf, "event=dns.mx domain=\"two.test\" status=ok") != NULL, "log: %s", buf);
    ck_assert_msg(strstr(buf, "mx1.two.test/10=127.0.0.21") != NULL, "log: %s", buf);
    ck_assert_msg(strstr(buf, "event=dns.mx domain=\"nullmx.test\" status=nullmx") != NULL, "log: %s", buf);
    free(buf);
}
END_TEST

START_TEST(test_reconfigure)
{
    NEED_DNSMASQ();
    int silent_port;
    int sfd = dnslab_silent_server(&silent_port);
    test_env e;
    env_init(&e, silent_port, 2000);

    /* A lookup stuck on the silent server is restarted on the new server. */
    int pending = 0;
    got g;
    start(&e, &g, &pending, "two.test");
    config *cfg2 = testlib_config_new();
    testlib_config_add_dns_server(cfg2, "127.0.0.1", shared_dm.port);
    cfg2->dns_timeout_ms = 500;
    char *err = NULL;
    ck_assert_int_eq(dns_reconfigure(e.d, cfg2, &err), 0);
    run(&e);
    ck_assert(g.called);
    ck_assert_int_eq(g.status, DNS_OK);
    ck_assert_str_eq(g.hosts, "mx1.two.test/10=127.0.0.21 mx2.two.test/20=127.0.0.22");
    got_clear(&g);

    /* Back to the silent server: the cache was dropped, so the answer is a timeout. */
    e.cfg->dns_timeout_ms = 300;
    ck_assert_int_eq(dns_reconfigure(e.d, e.cfg, &err), 0);
    resolve(&e, &g, "two.test");
    ck_assert_int_eq(g.status, DNS_TEMPFAIL);
    got_clear(&g);

    /* A bad server list is refused and changes nothing. */
    config *bad = testlib_config_new();
    testlib_config_add_dns_server(bad, "dns.example", 53);
    bad->dns_timeout_ms = 500;
    ck_assert_int_eq(dns_reconfigure(e.d, bad, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "dns.example is not an IPv4 or IPv6 address"));
    free(err);
    config_unref(cfg2);
    config_unref(bad);
    env_free(&e);
    close(sfd);
}
END_TEST

/* ---------- temporary failures (no dnsmasq needed) ---------- */

START_TEST(test_timeout_tempfail_shared_not_cached)
{
    int port;
    int sfd = dnslab_silent_server(&port);
    test_env e;
    env_init(&e, port, 500);
    int pending = 0;
    got g[2];
    int64_t t0 = util_mono_ms();
    start(&e, &g[0], &pending, "slow.test");
    start(&e, &g[1], &pending, "SLOW.test");
    run(&e);
    int64_t took = util_mono_ms() - t0;
    for (int i = 0; i < 2; i++) {
        ck_assert(g[i].called);
        ck_assert_int_eq(g[i].status, DNS_TEMPFAIL);
        ck_assert_msg(strstr(g[i].error, "slow.test: MX lookup failed: Timeout") != NULL, "error: %s", g[i].error);
        got_clear(&g[i]);
    }
    /* 500 ms per attempt, 2 attempts (the second with doubled timeout in c-ares). */
    ck_assert_msg(took >= 400 && took < 4000, "took %lld ms", (long long)took);
    int ids[64], nids = 0;
    ck_assert_int_eq(count_queries(sfd, "slow.test", ids, &nids), 1);   /* one shared query */

    /* Temporary failures are not cached: the next lookup asks again. */
    resolve(&e, &g[0], "slow.test");
    ck_assert_int_eq(g[0].status, DNS_TEMPFAIL);
    got_clear(&g[0]);
    ck_assert_int_eq(count_queries(sfd, "slow.test", ids, &nids), 1);
    env_free(&e);
    close(sfd);
}
END_TEST

START_TEST(test_connection_refused_tempfail)
{
    test_env e;
    env_init(&e, dnslab_free_udp_port(), 500);   /* nothing listens: ICMP port unreachable */
    got g;
    resolve(&e, &g, "refused.test");
    ck_assert_int_eq(g.status, DNS_TEMPFAIL);
    ck_assert_ptr_nonnull(strstr(g.error, "refused.test: MX lookup failed: "));
    got_clear(&g);
    env_free(&e);
}
END_TEST

static void never_cb(void *arg, const dns_mx_result *r)
{
    (void)r;
    *(bool *)arg = true;
}

static void quiet_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop for s seconds (callbacks that must not come get their chance). */
static void quiet_run(test_env *e, double s)
{
    ev_timer t;
    ev_timer_init(&t, quiet_guard, s, 0.);
    ev_timer_start(e->loop, &t);
    ev_run(e->loop, 0);
    ev_timer_stop(e->loop, &t);
}

START_TEST(test_free_with_pending_lookups)
{
    int port;
    int sfd = dnslab_silent_server(&port);
    test_env e;
    env_init(&e, port, 1000);
    bool called = false;
    dns_resolve_mx(e.d, "pending.test", never_cb, &called);
    dns_resolve_mx(e.d, "", never_cb, &called);   /* ready, not delivered yet */
    for (int i = 0; i < 100 && !called; i++)      /* the query goes out, "" is delivered */
        ev_run(e.loop, EVRUN_ONCE);
    ck_assert(called);
    called = false;
    dns_resolve_mx(e.d, "pending2.test", never_cb, &called);
    dns_resolve_mx(e.d, "", never_cb, &called);
    dns_free(e.d);
    e.d = NULL;
    ev_timer t;                                    /* nothing may fire afterwards */
    ev_timer_init(&t, quiet_guard, 0.3, 0.);
    ev_timer_start(e.loop, &t);
    ev_run(e.loop, 0);
    ck_assert_msg(!called, "a callback ran after dns_free");
    ck_assert_int_eq(ev_pending_count(e.loop), 0);
    env_free(&e);
    close(sfd);
}
END_TEST

typedef struct free_in_cb {
    dns **d;
    int calls;
} free_in_cb;

static void free_cb(void *arg, const dns_mx_result *r)
{
    (void)r;
    free_in_cb *f = arg;
    f->calls++;
    dns_free(*f->d);
    *f->d = NULL;
}

START_TEST(test_free_inside_callback)
{
    int port;
    int sfd = dnslab_silent_server(&port);
    test_env e;
    env_init(&e, port, 1000);
    free_in_cb f = {&e.d, 0};
    dns_resolve_mx(e.d, "", free_cb, &f);            /* delivered first: frees the dns */
    dns_resolve_mx(e.d, "", free_cb, &f);            /* same dispatch: must not run */
    dns_resolve_mx(e.d, "inflight.test", free_cb, &f);
    ev_timer t;
    ev_timer_init(&t, quiet_guard, 0.3, 0.);
    ev_timer_start(e.loop, &t);
    ev_run(e.loop, 0);
    ck_assert_int_eq(f.calls, 1);
    ck_assert_ptr_null(e.d);
    env_free(&e);
    close(sfd);
}
END_TEST

START_TEST(test_bad_server_rejected)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    config *cfg = testlib_config_new();
    testlib_config_add_dns_server(cfg, "resolver.example", 53);
    cfg->dns_timeout_ms = 2000;
    char *err = NULL;
    ck_assert_ptr_null(dns_new(loop, cfg, NULL, &err));
    ck_assert_str_eq(err, "dns.servers: resolver.example is not an IPv4 or IPv6 address");
    free(err);
    /* IPv6 literals are accepted. */
    config *cfg6 = testlib_config_new();
    testlib_config_add_dns_server(cfg6, "::1", 5353);
    dns *d = dns_new(loop, cfg6, NULL, &err);
    ck_assert_ptr_nonnull(d);
    dns_free(d);
    config_unref(cfg);
    config_unref(cfg6);
    ev_loop_destroy(loop);
}
END_TEST

static Suite *dns_suite(void)
{
    if (access(DNSMASQ, X_OK) != 0)
        fprintf(stderr, "test_dns: %s not installed: the dnsmasq test case is skipped\n", DNSMASQ);
    Suite *s = suite_create("dns");
    TCase *pure = tcase_create("order");
    tcase_add_test(pure, test_order_table);
    tcase_add_test(pure, test_order_equal_both_orders);
    suite_add_tcase(s, pure);

    TCase *local = tcase_create("local");
    tcase_set_timeout(local, 30);
    tcase_add_test(local, test_timeout_tempfail_shared_not_cached);
    tcase_add_test(local, test_connection_refused_tempfail);
    tcase_add_test(local, test_free_with_pending_lookups);
    tcase_add_test(local, test_free_inside_callback);
    tcase_add_test(local, test_bad_server_rejected);
    suite_add_tcase(s, local);

    TCase *dm = tcase_create("dnsmasq");
    tcase_set_timeout(dm, 60);
    tcase_add_unchecked_fixture(dm, dm_setup, dm_teardown);
    tcase_add_test(dm, test_resolve_table);
    tcase_add_test(dm, test_equal_preference_both_orders);
    tcase_add_test(dm, test_concurrent_same_domain);
    tcase_add_test(dm, test_lookup_from_callback);
    tcase_add_test(dm, test_query_cancel);
    tcase_add_test(dm, test_cache_outlives_server);
    tcase_add_test(dm, test_debug_log_line);
    tcase_add_test(dm, test_reconfigure);
    suite_add_tcase(s, dm);
    return s;
}

TESTLIB_SUITES(dns_suite);
