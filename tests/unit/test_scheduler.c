/* test_scheduler.c — the scheduler as a data structure (scheduler/scheduler.c and its
 * load.c, settle.c), driven over a real temporary spool with a fake clock and a fake
 * delivery executor wired through scheduler_exec_ops: committed messages reach the
 * executor as jobs per (message, domain); a deferral comes back at its retry time and not
 * before; a higher-priority set starts before a lower one's backlog; sets of equal
 * priority alternate; settling writes the recipients' rows and the Delivery, Bounce and
 * DeliveryDelay events; a graceful stop waits for the executor's sessions; a recipient
 * settled while its spool update is not committed yet is never paged in again, also while
 * the commit of that update fails (disk full) and is retried until it lands once; with
 * recipients in the spool only (memory budget), kilnctl status and queue count each one once;
 * a set whose List-Unsubscribe URL names {recipient} gets one job per recipient, also after
 * a restart and for jobs made before a reload marked it. */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <sqlite3.h>

#include "base/config.h"
#include "base/kiln.h"
#include "base/log.h"
#include "base/util.h"
#include "scheduler/job.h"
#include "scheduler/retry.h"
#include "scheduler/scheduler.h"
#include "store/spool.h"
#include "tests/unit/testlib.h"

#define T0 INT64_C(1700000000000)
#define RETRY_MS 300                /* retry_first_ms: short, the loop runs in real time */
#define MAX_STARTS 64
#define HORIZON_MS (10 * 60 * 1000)   /* SCHED_HORIZON_MS of scheduler/internal.h */

/* ------------------------------------------------------------------ fixtures */

static const char *tmpdir;
static char logpath[128];
static spool *sp;
static klog *lg;
static config *cfg;
static struct ev_loop *loop;
static kiln_ctx ctx;
static scheduler *sched;
static int64_t fake_now;

static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* The fake executor: records the jobs it is handed, in order, and keeps them until the
 * test ends their attempt; "sessions" are the jobs it calls in flight. */
typedef struct fake_exec {
    sched_job *started[MAX_STARTS];
    char set_of[MAX_STARTS][32];
    char msg_of[MAX_STARTS][80];
    size_t nstarted;
    int sessions;
    int stops;
    int config_changes;
} fake_exec;
static fake_exec fx;

static void fx_start(void *arg, sched_job *j)
{
    fake_exec *f = arg;
    ck_assert_uint_lt(f->nstarted, MAX_STARTS);
    /* the attempt fields an executor fills (mta/delivery.c does the same) */
    const config_set *cs = sched_set_config(ctx.cfg, j->msg.config_set);
    j->max_delivery_ms = cs ? cs->max_delivery_time_ms : 0;
    snprintf(f->set_of[f->nstarted], sizeof f->set_of[0], "%s", j->set->name);
    snprintf(f->msg_of[f->nstarted], sizeof f->msg_of[0], "%s", j->msg_id);
    f->started[f->nstarted++] = j;
}
static void fx_retry_waiting(void *arg) { (void)arg; }
static void fx_config_changed(void *arg) { ((fake_exec *)arg)->config_changes++; }
static void fx_pools_changed(void *arg) { (void)arg; }
static bool fx_ip_in_use(void *arg, const char *addr) { (void)arg, (void)addr; return false; }
static void fx_stop(void *arg) { ((fake_exec *)arg)->stops++; }
static int fx_sessions(void *arg) { return ((fake_exec *)arg)->sessions; }
static char *fx_job_reason(void *arg, const sched_job *j) { (void)arg, (void)j; return NULL; }

static const scheduler_exec_ops fx_ops = {
    .start = fx_start,
    .retry_waiting = fx_retry_waiting,
    .config_changed = fx_config_changed,
    .pools_changed = fx_pools_changed,
    .ip_in_use = fx_ip_in_use,
    .stop = fx_stop,
    .sessions = fx_sessions,
    .job_reason = fx_job_reason,
};

static void fixture_setup(void)
{
    tmpdir = testlib_tmpdir("sched");
    char *err = NULL;
    sp = spool_open(tmpdir, false, &err);
    ck_assert_msg(sp != NULL, "spool_open: %s", err ? err : "?");
    snprintf(logpath, sizeof logpath, "%s/kiln.log", tmpdir);
    lg = log_open(logpath, KLOG_DEBUG, &err);
    ck_assert_msg(lg != NULL, "log_open: %s", err ? err : "?");
    const int64_t day = 14LL * 3600 * 1000;
    cfg = testlib_config_new();
    testlib_config_add_set(cfg, "txn", "p")->max_delivery_time_ms = day;
    testlib_config_add_set(cfg, "bulk", "p")->max_delivery_time_ms = day;
    config_set *urgent = testlib_config_add_set(cfg, "urgent", "p");
    urgent->max_delivery_time_ms = day;
    urgent->priority = 10;
    testlib_config_add_set(cfg, "short", "p")->max_delivery_time_ms = 100;
    /* marked for one-click unsubscribe: per recipient ({recipient}), and not */
    testlib_config_add_set(cfg, "news", "p")->unsub_url =
        util_strdup("https://unsub.example/u?r={recipient}&m={message_id}");
    testlib_config_add_set(cfg, "digest", "p")->unsub_url =
        util_strdup("https://unsub.example/u?m={message_id}");
    testlib_config_set_default_set(cfg, "txn");
    testlib_config_set_retry(cfg, RETRY_MS, 3600 * 1000, 2);
    cfg->remote_port = 25;
    cfg->connect_timeout_ms = 10000;
    cfg->suppression_reasons = CONFIG_SUPPRESS_BOUNCE;
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    fake_now = T0;
    memset(&ctx, 0, sizeof ctx);
    ctx.loop = loop;
    ctx.cfg = cfg;
    ctx.log = lg;
    ctx.spool = sp;
    ctx.clock = fake_clock;
    memset(&fx, 0, sizeof fx);
    sched = scheduler_new(&ctx, &(scheduler_options){.mem_rcpts = 1000});
    ctx.sched = sched;
    scheduler_set_exec(sched, &fx_ops, &fx);
    ck_assert_int_eq(scheduler_recover(sched), 0);
}

static void fixture_teardown(void)
{
    scheduler_free(sched);
    spool_close(sp);
    ev_loop_destroy(loop);
    log_close(lg);
    config_unref(cfg);
    testlib_tmpdir_remove(tmpdir);
}

/* Runs the loop (real time, the fake clock stands still) until *count reaches want or
 * ms pass. */
static void drive_until(const size_t *count, size_t want, int ms)
{
    struct timespec ts = {0, 2 * 1000 * 1000};
    for (int waited = 0; waited < ms; waited += 2) {
        ev_run(loop, EVRUN_NOWAIT);
        if (count && *count >= want) return;
        nanosleep(&ts, NULL);
    }
}

/* A message of set with the given recipients, committed, and the scheduler told. */
static void commit_message(const char *id, const char *set, const char *const *rcpts, size_t n)
{
    static const char data[] = "Subject: t\r\n\r\nhello\r\n";
    char mail[256];
    snprintf(mail, sizeof mail, "{\"timestamp\":\"2023-11-14T22:13:20.000Z\",\"messageId\":\"%s\","
             "\"source\":\"app@example.test\",\"destination\":[]}", id);
    spool_message m = {.created_ms = fake_now, .config_set = set,
                       .mail_from = "app@example.test", .client_ip = "192.0.2.1",
                       .mail_json = mail, .data = data,
                       .data_len = sizeof data - 1, .quota_count = (unsigned)n};
    snprintf(m.id, sizeof m.id, "%s", id);
    ck_assert_int_eq(spool_add_message(sp, &m), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(spool_add_rcpt(sp, id, rcpts[i], SPOOL_RCPT_QUEUED, NULL), 0);
    ck_assert_int_eq(spool_flush(sp), 0);
    scheduler_message_committed(sched, id);
}

static sched_outcome reply(int code, const char *enhanced, const char *line)
{
    sched_outcome o;
    memset(&o, 0, sizeof o);
    retry_classify_reply(code, enhanced, line, &o.cls);
    o.text = line;
    o.remote = true;
    return o;
}

/* Pending recipients of a message as the spool has them. */
typedef struct pend {
    char addr[8][64];
    spool_rcpt_state state[8];
    int attempts[8];
    int64_t next[8];
    size_t n;
} pend;

static void pend_cb(void *arg, const spool_rcpt *r)
{
    pend *p = arg;
    ck_assert_uint_lt(p->n, 8);
    snprintf(p->addr[p->n], sizeof p->addr[0], "%s", r->address);
    p->state[p->n] = r->state;
    p->attempts[p->n] = r->attempts;
    p->next[p->n] = r->next_attempt_ms;
    p->n++;
}

static pend pending_of(const char *id)
{
    pend p;
    memset(&p, 0, sizeof p);
    ck_assert_int_eq(spool_each_pending_rcpt(sp, id, pend_cb, &p), 0);
    return p;
}

typedef struct evlist {
    json_t *ev[16];
    char set[16][32];
    size_t n;
} evlist;

static void outbox_cb(void *arg, int64_t id, const char *set, const char *json)
{
    (void)id;
    evlist *l = arg;
    ck_assert_uint_lt(l->n, 16);
    json_error_t e;
    l->ev[l->n] = json_loads(json, 0, &e);
    ck_assert_msg(l->ev[l->n] != NULL, "event is not JSON: %s", json);
    snprintf(l->set[l->n], sizeof l->set[0], "%s", set);
    l->n++;
}

static json_t *event_of_type(const evlist *l, const char *type)
{
    for (size_t i = 0; i < l->n; i++) {
        const char *t = json_string_value(json_object_get(l->ev[i], "eventType"));
        if (t && strcmp(t, type) == 0) return l->ev[i];
    }
    return NULL;
}

static void evlist_free(evlist *l)
{
    for (size_t i = 0; i < l->n; i++) json_decref(l->ev[i]);
}

/* ------------------------------------------------------------------ tests */

/* A committed message reaches the executor as one job per destination domain, active,
 * with its message loaded and all its recipients; the counts show them queued. */
START_TEST(committed_messages_reach_the_executor)
{
    const char *rcpts[] = {"a1@one.example", "b@two.example", "a2@ONE.example"};
    commit_message("m-1", "txn", rcpts, 3);
    int64_t q = -1, d = -1;
    scheduler_counts(sched, &q, &d, NULL);
    ck_assert_int_eq(q, 3);
    ck_assert_int_eq(d, 0);
    ck_assert_uint_eq(fx.nstarted, 0);   /* started by the pump, not inside the call */
    drive_until(&fx.nstarted, 2, 1000);
    drive_until(NULL, 0, 20);            /* and nothing more comes */
    ck_assert_uint_eq(fx.nstarted, 2);
    size_t one = 0, two = 0;
    for (size_t i = 0; i < 2; i++) {
        sched_job *j = fx.started[i];
        ck_assert_str_eq(j->msg_id, "m-1");
        ck_assert_int_eq(j->where, JOB_ACTIVE);
        ck_assert(j->loaded);
        ck_assert_str_eq(j->msg.mail_from, "app@example.test");
        ck_assert_str_eq(j->set->name, "txn");
        if (strcmp(j->domain, "one.example") == 0) {
            one++;
            ck_assert_uint_eq(j->nrcpts, 2);
            ck_assert_str_eq(j->rcpts[0].address, "a1@one.example");
            ck_assert_str_eq(j->rcpts[1].address, "a2@ONE.example");
        } else {
            two++;
            ck_assert_str_eq(j->domain, "two.example");
            ck_assert_uint_eq(j->nrcpts, 1);
        }
    }
    ck_assert_uint_eq(one, 1);
    ck_assert_uint_eq(two, 1);
    char buf[SCHED_TEXT_LEN];
    ck_assert_ptr_nonnull(strstr(sched_job_to_text(fx.started[0], buf, sizeof buf), "m-1"));
}
END_TEST

/* A deferred recipient is written DEFERRED with its retry time, is not handed out again
 * before that time, and is handed out again once the clock reaches it. */
START_TEST(deferral_comes_back_at_its_retry_time)
{
    const char *rcpts[] = {"x@later.example"};
    commit_message("m-2", "txn", rcpts, 1);
    drive_until(&fx.nstarted, 1, 1000);
    ck_assert_uint_eq(fx.nstarted, 1);
    sched_job *j = fx.started[0];
    sched_outcome out = reply(451, "4.3.0", "451 4.3.0 try again later");
    sched_settle(sched, j, &out, "192.0.2.10", "198.51.100.7");
    sched_job_done(sched, j);
    ck_assert_int_eq(spool_flush(sp), 0);   /* the spool's reads see committed rows */

    pend p = pending_of("m-2");
    ck_assert_uint_eq(p.n, 1);
    ck_assert_int_eq(p.state[0], SPOOL_RCPT_DEFERRED);
    ck_assert_int_eq(p.attempts[0], 1);
    ck_assert_int_eq(p.next[0], T0 + RETRY_MS);
    int64_t q = -1, d = -1;
    scheduler_counts(sched, &q, &d, NULL);
    ck_assert_int_eq(q, 0);
    ck_assert_int_eq(d, 1);

    /* the loop runs past RETRY_MS of real time, but the clock says it is not due yet */
    drive_until(&fx.nstarted, 2, 3 * RETRY_MS);
    ck_assert_uint_eq(fx.nstarted, 1);
    fake_now = T0 + RETRY_MS - 1;
    drive_until(&fx.nstarted, 2, 2 * RETRY_MS);
    ck_assert_uint_eq(fx.nstarted, 1);
    /* now it is */
    fake_now = T0 + RETRY_MS;
    drive_until(&fx.nstarted, 2, 4 * RETRY_MS);
    ck_assert_uint_eq(fx.nstarted, 2);
    ck_assert_str_eq(fx.started[1]->msg_id, "m-2");
    ck_assert_int_eq(fx.started[1]->rcpts[0].attempts, 1);
    ck_assert_str_eq(fx.started[1]->rcpts[0].last_reply, "451 4.3.0 try again later");
}
END_TEST

/* With a backlog of a low-priority set queued first, the jobs of a higher-priority set
 * committed after it start first. */
START_TEST(higher_priority_starts_before_a_backlog)
{
    const char *r[] = {"u@dest.example"};
    char id[32];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "bulk-%d", i);
        commit_message(id, "bulk", r, 1);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(id, sizeof id, "urgent-%d", i);
        commit_message(id, "urgent", r, 1);
    }
    drive_until(&fx.nstarted, 8, 1000);
    ck_assert_uint_eq(fx.nstarted, 8);
    ck_assert_str_eq(fx.set_of[0], "urgent");
    ck_assert_str_eq(fx.set_of[1], "urgent");
    ck_assert_str_eq(fx.msg_of[0], "urgent-0");   /* FIFO within a set */
    ck_assert_str_eq(fx.msg_of[1], "urgent-1");
    for (size_t i = 2; i < 8; i++) ck_assert_str_eq(fx.set_of[i], "bulk");
}
END_TEST

/* Two sets of equal priority alternate, whichever was queued first. */
START_TEST(equal_priority_sets_alternate)
{
    const char *r[] = {"u@dest.example"};
    char id[32];
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "txn-%d", i);
        commit_message(id, "txn", r, 1);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "bulk-%d", i);
        commit_message(id, "bulk", r, 1);
    }
    drive_until(&fx.nstarted, 8, 1000);
    ck_assert_uint_eq(fx.nstarted, 8);
    for (size_t i = 1; i < 8; i++)
        ck_assert_msg(strcmp(fx.set_of[i], fx.set_of[i - 1]) != 0,
                      "start %zu and %zu both from set %s", i - 1, i, fx.set_of[i]);
}
END_TEST

/* One attempt with a delivery, a bounce and a deferral: the delivered and bounced rows
 * become final, the deferred one waits, the bounced address is suppressed, and the outbox
 * holds one Delivery, one Bounce and one DeliveryDelay event of the message's set with
 * the right recipients, outgoing IP and remote MTA. */
START_TEST(settle_writes_rows_and_events)
{
    const char *rcpts[] = {"ok@dest.example", "gone@dest.example", "slow@dest.example"};
    commit_message("m-3", "txn", rcpts, 3);
    drive_until(&fx.nstarted, 1, 1000);
    ck_assert_uint_eq(fx.nstarted, 1);
    sched_job *j = fx.started[0];
    ck_assert_uint_eq(j->nrcpts, 3);
    sched_outcome out[3] = {
        reply(250, "2.0.0", "250 2.0.0 ok"),
        reply(550, "5.1.1", "550 5.1.1 no such user"),
        reply(451, "4.7.1", "451 4.7.1 greylisted"),
    };
    sched_settle(sched, j, out, "192.0.2.10", "198.51.100.7");
    ck_assert_uint_eq(j->nrcpts, 1);   /* the final ones left the job */
    ck_assert_str_eq(j->rcpts[0].address, "slow@dest.example");
    sched_job_done(sched, j);
    ck_assert_int_eq(spool_flush(sp), 0);

    pend p = pending_of("m-3");
    ck_assert_uint_eq(p.n, 1);
    ck_assert_str_eq(p.addr[0], "slow@dest.example");
    ck_assert_int_eq(p.state[0], SPOOL_RCPT_DEFERRED);
    bool found = false;
    char *reason = NULL;
    ck_assert_int_eq(spool_suppression_get(sp, "gone@dest.example", &found, &reason, NULL), 0);
    ck_assert(found);
    free(reason);

    evlist l;
    memset(&l, 0, sizeof l);
    ck_assert_int_eq(spool_each_event(sp, 0, 16, outbox_cb, &l), 0);
    ck_assert_uint_eq(l.n, 3);
    for (size_t i = 0; i < l.n; i++) ck_assert_str_eq(l.set[i], "txn");
    json_t *dv = event_of_type(&l, "Delivery");
    json_t *bo = event_of_type(&l, "Bounce");
    json_t *dl = event_of_type(&l, "DeliveryDelay");
    ck_assert_ptr_nonnull(dv);
    ck_assert_ptr_nonnull(bo);
    ck_assert_ptr_nonnull(dl);
    json_t *dvr = json_object_get(json_object_get(dv, "delivery"), "recipients");
    ck_assert_uint_eq(json_array_size(dvr), 1);
    ck_assert_str_eq(json_string_value(json_array_get(dvr, 0)), "ok@dest.example");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(dv, "delivery"),
                                                       "remoteMtaIp")), "198.51.100.7");
    json_t *tags = json_object_get(json_object_get(dv, "mail"), "tags");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(tags, "ses:outgoing-ip"), 0)),
                     "192.0.2.10");
    json_t *bounce = json_object_get(bo, "bounce");
    ck_assert_str_eq(json_string_value(json_object_get(bounce, "bounceType")), "Permanent");
    json_t *bor = json_object_get(bounce, "bouncedRecipients");
    ck_assert_uint_eq(json_array_size(bor), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(bor, 0), "emailAddress")),
                     "gone@dest.example");
    json_t *dly = json_object_get(dl, "deliveryDelay");
    json_t *dlr = json_object_get(dly, "delayedRecipients");
    ck_assert_uint_eq(json_array_size(dlr), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(dlr, 0), "emailAddress")),
                     "slow@dest.example");
    evlist_free(&l);
}
END_TEST

/* A deferral that would come after max_delivery_time is a Transient bounce instead. */
START_TEST(deferral_past_expiry_bounces)
{
    const char *rcpts[] = {"late@dest.example"};
    commit_message("m-4", "short", rcpts, 1);   /* max_delivery_time 100 ms < RETRY_MS */
    drive_until(&fx.nstarted, 1, 1000);
    ck_assert_uint_eq(fx.nstarted, 1);
    sched_job *j = fx.started[0];
    sched_outcome out = reply(451, "4.3.0", "451 4.3.0 try again later");
    sched_settle(sched, j, &out, NULL, NULL);
    ck_assert_uint_eq(j->nrcpts, 0);
    sched_job_done(sched, j);
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(pending_of("m-4").n, 0);
    evlist l;
    memset(&l, 0, sizeof l);
    ck_assert_int_eq(spool_each_event(sp, 0, 16, outbox_cb, &l), 0);
    ck_assert_uint_eq(l.n, 1);
    json_t *bo = event_of_type(&l, "Bounce");
    ck_assert_ptr_nonnull(bo);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(bo, "bounce"), "bounceType")),
                     "Transient");
    evlist_free(&l);
    int64_t q = -1, d = -1;
    scheduler_counts(sched, &q, &d, NULL);
    ck_assert_int_eq(q + d, 0);
}
END_TEST

static int stop_calls;
static void on_stopped(void *arg)
{
    (void)arg;
    stop_calls++;
}

/* A graceful stop tells the executor, starts nothing new, and completes only when the
 * executor's last session is gone; the recipient it finished is recorded. */
START_TEST(stop_waits_for_in_flight_jobs)
{
    const char *rcpts[] = {"a@dest.example"};
    commit_message("m-5", "txn", rcpts, 1);
    drive_until(&fx.nstarted, 1, 1000);
    ck_assert_uint_eq(fx.nstarted, 1);
    fx.sessions = 1;                     /* the job is in a transaction */
    stop_calls = 0;
    scheduler_stop(sched, on_stopped, NULL);
    ck_assert_int_eq(fx.stops, 1);
    ck_assert_int_eq(stop_calls, 0);
    /* new work is not started while stopping */
    const char *more[] = {"b@dest.example"};
    commit_message("m-6", "txn", more, 1);
    drive_until(&fx.nstarted, 2, 100);
    ck_assert_uint_eq(fx.nstarted, 1);
    ck_assert_int_eq(stop_calls, 0);
    /* the transaction ends, then the session */
    sched_job *j = fx.started[0];
    sched_outcome out = reply(250, "2.0.0", "250 2.0.0 ok");
    sched_settle(sched, j, &out, "192.0.2.10", "198.51.100.7");
    sched_job_done(sched, j);
    sched_check_stop(sched);
    ck_assert_int_eq(stop_calls, 0);     /* a session is still open */
    fx.sessions = 0;
    sched_check_stop(sched);
    ck_assert_int_eq(stop_calls, 1);
    sched_check_stop(sched);
    ck_assert_int_eq(stop_calls, 1);     /* reported once */
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(pending_of("m-5").n, 0);
    ck_assert_uint_eq(pending_of("m-6").n, 1);   /* stays queued in the spool */
}
END_TEST

static size_t starts_of(const char *msg_id)
{
    size_t n = 0;
    for (size_t i = 0; i < fx.nstarted; i++) n += strcmp(fx.msg_of[i], msg_id) == 0;
    return n;
}

/* The spool's reads see committed rows only: a recipient the scheduler has settled as
 * delivered, while that update waits for its commit, still reads as QUEUED. A sweep of the
 * spool in that window (here: a deferred recipient makes sweeps run, and the clock is past
 * the sweep time) must pass over it; loading it again would deliver it twice. */
START_TEST(settled_but_uncommitted_is_not_paged_again)
{
    const char *ra[] = {"a@one.example"};
    const char *rd[] = {"d@two.example"};
    commit_message("m-a", "txn", ra, 1);
    commit_message("m-d", "txn", rd, 1);
    drive_until(&fx.nstarted, 2, 1000);
    ck_assert_uint_eq(fx.nstarted, 2);
    sched_job *ja = strcmp(fx.msg_of[0], "m-a") == 0 ? fx.started[0] : fx.started[1];
    sched_job *jd = ja == fx.started[0] ? fx.started[1] : fx.started[0];
    ck_assert_str_eq(jd->msg_id, "m-d");

    /* d is deferred, committed: the spool has a DEFERRED row, so sweeps are due */
    sched_outcome later = reply(451, "4.3.0", "451 4.3.0 try again later");
    sched_settle(sched, jd, &later, "192.0.2.10", "198.51.100.7");
    sched_job_done(sched, jd);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* a is delivered; its update stays in the spool's filling batch */
    fake_now = T0 + HORIZON_MS;
    sched_outcome ok = reply(250, "2.0.0", "250 2.0.0 ok");
    sched_settle(sched, ja, &ok, "192.0.2.10", "198.51.100.7");
    sched_job_done(sched, ja);
    ck_assert(spool_has_pending(sp));
    ck_assert_uint_eq(pending_of("m-a").n, 1);   /* the window: the spool still shows it */
    drive_until(&fx.nstarted, 4, 300);
    ck_assert_uint_eq(starts_of("m-d"), 2);       /* the sweep ran: d came back when due */
    ck_assert_uint_eq(starts_of("m-a"), 1);       /* a did not */

    /* committed: the spool agrees, and a stays delivered */
    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(pending_of("m-a").n, 0);
    drive_until(&fx.nstarted, 4, 100);
    ck_assert_uint_eq(starts_of("m-a"), 1);
}
END_TEST

/* Disk full at the commit: the batch holding a delivery, a 5xx bounce, their events and
 * the suppression entry fails three times. Meanwhile the spool still shows both recipients
 * QUEUED, yet the pager never hands them out again (the rows stay held) while other work
 * goes on (d's retry comes back); once a commit succeeds, everything lands exactly once:
 * no recipient pending, the address suppressed, one Delivery and one Bounce event. */
START_TEST(failed_commit_is_retried_and_lands_once)
{
    const char *ra[] = {"a@one.example", "b@one.example"};
    const char *rd[] = {"d@two.example"};
    commit_message("m-a", "txn", ra, 2);
    commit_message("m-d", "txn", rd, 1);
    drive_until(&fx.nstarted, 2, 1000);
    ck_assert_uint_eq(fx.nstarted, 2);
    sched_job *ja = strcmp(fx.msg_of[0], "m-a") == 0 ? fx.started[0] : fx.started[1];
    sched_job *jd = ja == fx.started[0] ? fx.started[1] : fx.started[0];
    sched_outcome later = reply(451, "4.3.0", "451 4.3.0 try again later");
    sched_settle(sched, jd, &later, "192.0.2.10", "198.51.100.7");
    sched_job_done(sched, jd);
    ck_assert_int_eq(spool_flush(sp), 0);

    spool_test_fail_batches(sp, 3, SQLITE_FULL);
    sched_outcome out[2] = {
        reply(250, "2.0.0", "250 2.0.0 ok"),
        reply(550, "5.1.1", "550 5.1.1 no such user"),
    };
    sched_settle(sched, ja, out, "192.0.2.10", "198.51.100.7");
    sched_job_done(sched, ja);
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(spool_flush(sp), -1);
        ck_assert_ptr_nonnull(strstr(spool_errmsg(sp), "database or disk is full"));
        ck_assert_uint_eq(spool_failures(sp), (unsigned)round + 1);
        ck_assert_uint_gt(spool_kept_waiting(sp), 0);
        ck_assert_uint_eq(pending_of("m-a").n, 2);   /* not written yet */
        /* a sweep after the failure reads every row due, m-a's QUEUED ones too */
        fake_now = T0 + HORIZON_MS * (round + 1);
        drive_until(NULL, 0, 100);
        ck_assert_uint_eq(starts_of("m-a"), 1);       /* and not handed out again */
    }
    ck_assert_uint_eq(starts_of("m-d"), 2);           /* the pager did run meanwhile */

    ck_assert_int_eq(spool_flush(sp), 0);
    ck_assert_uint_eq(spool_failures(sp), 0);
    ck_assert_uint_eq(spool_kept_waiting(sp), 0);
    ck_assert_uint_eq(pending_of("m-a").n, 0);
    bool found = false;
    ck_assert_int_eq(spool_suppression_get(sp, "b@one.example", &found, NULL, NULL), 0);
    ck_assert(found);
    evlist l;
    memset(&l, 0, sizeof l);
    ck_assert_int_eq(spool_each_event(sp, 0, 16, outbox_cb, &l), 0);
    size_t deliveries = 0, bounces = 0;
    for (size_t i = 0; i < l.n; i++) {
        const char *t = json_string_value(json_object_get(l.ev[i], "eventType"));
        deliveries += strcmp(t, "Delivery") == 0;
        bounces += strcmp(t, "Bounce") == 0;
    }
    evlist_free(&l);
    ck_assert_uint_eq(deliveries, 1);
    ck_assert_uint_eq(bounces, 1);
    drive_until(NULL, 0, 100);
    ck_assert_uint_eq(starts_of("m-a"), 1);
}
END_TEST

/* The row of rows for (set, domain, state), or NULL. */
static const scheduler_queue_row *row_of(const scheduler_queue_row *rows, size_t n,
                                         const char *set, const char *domain, const char *state)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].set, set) == 0 && strcmp(rows[i].domain, domain) == 0 &&
            strcmp(rows[i].state, state) == 0)
            return &rows[i];
    return NULL;
}

static int64_t rows_total(const scheduler_queue_row *rows, size_t n)
{
    int64_t t = 0;
    for (size_t i = 0; i < n; i++) t += rows[i].recipients;
    return t;
}

/* With room for 4 recipients in memory, a message that does not fit waits in the spool.
 * kilnctl status and queue count every recipient once, whether in memory or in the spool
 * only; a retry in flight counts as queued (in memory it is, in the spool it is still
 * DEFERRED); the domain filter applies to both parts; the report made in two halves (the
 * control socket's query thread) gives the same rows. */
START_TEST(counts_with_recipients_in_the_spool_only)
{
    scheduler_free(sched);
    sched = scheduler_new(&ctx, &(scheduler_options){.mem_rcpts = 4});
    ctx.sched = sched;
    scheduler_set_exec(sched, &fx_ops, &fx);
    ck_assert_int_eq(scheduler_recover(sched), 0);
    const char *a[] = {"a@one.example", "b@two.example", "c@three.example"};
    commit_message("m-a", "txn", a, 3);
    drive_until(&fx.nstarted, 3, 1000);
    ck_assert_uint_eq(fx.nstarted, 3);
    sched_job *j = fx.started[0];
    char dom[64];
    snprintf(dom, sizeof dom, "%s", j->domain);
    sched_outcome out = reply(451, "4.3.0", "451 4.3.0 try again later");
    sched_settle(sched, j, &out, "192.0.2.10", "198.51.100.7");
    sched_job_done(sched, j);
    const char *b[] = {"x1@bulk.example", "x2@bulk.example", "y1@other.example",
                       "x3@bulk.example", "y2@other.example", "x4@bulk.example"};
    commit_message("m-b", "bulk", b, 6);
    /* and one more for the deferred one's domain and set: in the spool, never attempted */
    char c0[80];
    snprintf(c0, sizeof c0, "z@%s", dom);
    const char *c[] = {c0};
    commit_message("m-c", "txn", c, 1);
    drive_until(NULL, 0, 30);
    ck_assert_uint_eq(fx.nstarted, 3);   /* m-b and m-c stay in the spool: memory holds 3 of 4 */

    int64_t q = -1, d = -1;
    scheduler_counts(sched, &q, &d, NULL);
    ck_assert_int_eq(q, 9);
    ck_assert_int_eq(d, 1);
    scheduler_queue_row *rows = NULL;
    size_t n = scheduler_queue(sched, NULL, &rows);
    ck_assert_int_eq(rows_total(rows, n), 10);
    const scheduler_queue_row *r = row_of(rows, n, "txn", dom, "deferred");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->recipients, 1);
    r = row_of(rows, n, "txn", dom, "ready");   /* m-c's, from the spool */
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->recipients, 1);
    r = row_of(rows, n, "bulk", "bulk.example", "ready");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->recipients, 4);
    ck_assert_str_eq(r->pool, "p");
    r = row_of(rows, n, "bulk", "other.example", "ready");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->recipients, 2);
    scheduler_queue_free(rows, n);

    /* the retry comes due and is handed out again: in flight, so queued */
    fake_now = T0 + RETRY_MS;
    drive_until(&fx.nstarted, 4, 4 * RETRY_MS);
    ck_assert_uint_eq(fx.nstarted, 4);
    ck_assert_str_eq(fx.started[3]->domain, dom);
    scheduler_counts(sched, &q, &d, NULL);
    ck_assert_int_eq(q, 10);
    ck_assert_int_eq(d, 0);
    n = scheduler_queue(sched, NULL, &rows);
    ck_assert_int_eq(rows_total(rows, n), 10);
    ck_assert_ptr_null(row_of(rows, n, "txn", dom, "deferred"));
    r = row_of(rows, n, "txn", dom, "active");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->recipients, 1);
    scheduler_queue_free(rows, n);

    /* only one domain, in either case */
    n = scheduler_queue(sched, "BULK.example", &rows);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(rows[0].domain, "bulk.example");
    ck_assert_int_eq(rows[0].recipients, 4);
    scheduler_queue_free(rows, n);
    n = scheduler_queue(sched, dom, &rows);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(rows[0].state, "active");
    ck_assert_str_eq(rows[1].state, "ready");
    scheduler_queue_free(rows, n);

    /* in two halves, the spool read apart: the same rows */
    scheduler_queue_snap *snap = scheduler_queue_snapshot(sched, NULL);
    ck_assert(scheduler_queue_snap_wants_spool(snap));
    ck_assert_ptr_null(scheduler_queue_snap_domain(snap));
    char *err = NULL;
    spool_reader *rd = spool_reader_open(tmpdir, &err);
    ck_assert_msg(rd != NULL, "reader: %s", err ? err : "?");
    ck_assert_int_eq(spool_reader_count_by(rd, scheduler_queue_snap_spool, snap), 0);
    spool_reader_close(rd);
    scheduler_queue_row *rows2 = NULL;
    size_t n2 = scheduler_queue_finish(snap, &rows2);
    n = scheduler_queue(sched, NULL, &rows);
    ck_assert_uint_eq(n2, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(rows2[i].pool, rows[i].pool);
        ck_assert_str_eq(rows2[i].set, rows[i].set);
        ck_assert_str_eq(rows2[i].domain, rows[i].domain);
        ck_assert_str_eq(rows2[i].state, rows[i].state);
        ck_assert_int_eq(rows2[i].recipients, rows[i].recipients);
    }
    scheduler_queue_free(rows, n);
    scheduler_queue_free(rows2, n2);
}
END_TEST

/* The addresses of the started jobs of message id, one job each ("" when a job has more
 * than one recipient), in start order; returns how many jobs. */
static size_t single_rcpts_of(const char *id, char out[][64], size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < fx.nstarted; i++) {
        if (strcmp(fx.msg_of[i], id) != 0) continue;
        ck_assert_uint_lt(n, max);
        sched_job *j = fx.started[i];
        snprintf(out[n++], 64, "%s", j->nrcpts == 1 ? j->rcpts[0].address : "");
    }
    return n;
}

static bool has_rcpt(char list[][64], size_t n, const char *addr)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], addr) == 0) return true;
    return false;
}

/* A set whose List-Unsubscribe URL names {recipient} sends each recipient a message of its
 * own: 3 recipients of one domain become 3 jobs of one recipient (also when the spool is
 * read again at start-up); a set marked without {recipient}, like an unmarked one, keeps
 * one job per domain. */
START_TEST(per_recipient_set_gets_one_job_per_recipient)
{
    const char *rcpts[] = {"a@one.example", "b@one.example", "c@ONE.example"};
    commit_message("m-news", "news", rcpts, 3);
    commit_message("m-digest", "digest", rcpts, 3);
    commit_message("m-txn", "txn", rcpts, 3);
    drive_until(&fx.nstarted, 5, 1000);
    drive_until(NULL, 0, 20);
    ck_assert_uint_eq(fx.nstarted, 5);
    char got[8][64];
    ck_assert_uint_eq(single_rcpts_of("m-news", got, 8), 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_msg(has_rcpt(got, 3, rcpts[i]), "%s has no job of its own", rcpts[i]);
    ck_assert_uint_eq(single_rcpts_of("m-digest", got, 8), 1);
    ck_assert_uint_eq(single_rcpts_of("m-txn", got, 8), 1);
    for (size_t i = 0; i < fx.nstarted; i++)
        if (strcmp(fx.msg_of[i], "m-news") != 0) ck_assert_uint_eq(fx.started[i]->nrcpts, 3);
    int64_t q = -1;
    scheduler_counts(sched, &q, NULL, NULL);
    ck_assert_int_eq(q, 9);

    /* a restart reads the same recipients from the spool: the same jobs */
    scheduler_free(sched);
    ck_assert_int_eq(spool_flush(sp), 0);   /* what the old one saved (kilnd flushes at start) */
    memset(&fx, 0, sizeof fx);
    sched = scheduler_new(&ctx, &(scheduler_options){.mem_rcpts = 1000});
    ctx.sched = sched;
    scheduler_set_exec(sched, &fx_ops, &fx);
    ck_assert_int_eq(scheduler_recover(sched), 9);
    drive_until(&fx.nstarted, 5, 1000);
    drive_until(NULL, 0, 20);
    ck_assert_uint_eq(fx.nstarted, 5);
    ck_assert_uint_eq(single_rcpts_of("m-news", got, 8), 3);
    for (size_t i = 0; i < 3; i++) ck_assert(has_rcpt(got, 3, rcpts[i]));
    ck_assert_uint_eq(single_rcpts_of("m-digest", got, 8), 1);
}
END_TEST

/* A job of three recipients made before a reload marked its set per-recipient is split
 * as it starts again: each recipient goes alone, none twice, none lost. */
START_TEST(reload_to_per_recipient_splits_waiting_jobs)
{
    const char *rcpts[] = {"a@one.example", "b@one.example", "c@one.example"};
    commit_message("m-bulk", "bulk", rcpts, 3);
    drive_until(&fx.nstarted, 1, 1000);
    ck_assert_uint_eq(fx.nstarted, 1);
    sched_job *j = fx.started[0];
    ck_assert_uint_eq(j->nrcpts, 3);
    sched_outcome out[3] = {reply(451, "4.3.0", "451 4.3.0 later"),
                            reply(451, "4.3.0", "451 4.3.0 later"),
                            reply(451, "4.3.0", "451 4.3.0 later")};
    sched_settle(sched, j, out, "192.0.2.10", "198.51.100.7");
    sched_job_done(sched, j);
    ck_assert_int_eq(spool_flush(sp), 0);

    /* the reload: bulk now names {recipient} */
    config_set *bulk = (config_set *)config_find_set(cfg, "bulk");
    bulk->unsub_url = util_strdup("https://unsub.example/u?r={recipient}");
    scheduler_config_changed(sched);
    fake_now = T0 + RETRY_MS;
    drive_until(&fx.nstarted, 4, 4 * RETRY_MS);
    drive_until(NULL, 0, 20);
    ck_assert_uint_eq(fx.nstarted, 4);
    char got[8][64];
    size_t n = 0;
    for (size_t i = 1; i < fx.nstarted; i++) {
        ck_assert_uint_eq(fx.started[i]->nrcpts, 1);
        ck_assert_int_eq(fx.started[i]->rcpts[0].attempts, 1);
        snprintf(got[n++], 64, "%s", fx.started[i]->rcpts[0].address);
    }
    for (size_t i = 0; i < 3; i++)
        ck_assert_msg(has_rcpt(got, n, rcpts[i]), "%s did not start alone", rcpts[i]);
    int64_t q = -1, d = -1;
    scheduler_counts(sched, &q, &d, NULL);
    ck_assert_int_eq(q, 3);
    ck_assert_int_eq(d, 0);
    /* the debug log says why */
    char *log = testlib_read_file(logpath, NULL);
    ck_assert_ptr_nonnull(log);
    ck_assert_msg(strstr(log, "event=sched.split id=\"m-bulk\" domain=\"one.example\" split=1+2 "
                              "reason=\"one recipient per delivery"),
                  "%s", log);
    free(log);
}
END_TEST

/* A reload reaches the executor (DNS settings) through its op. */
START_TEST(config_change_reaches_the_executor)
{
    scheduler_config_changed(sched);
    ck_assert_int_eq(fx.config_changes, 1);
}
END_TEST

static Suite *scheduler_suite(void)
{
    Suite *s = suite_create("scheduler");
    TCase *tc = tcase_create("scheduler");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, committed_messages_reach_the_executor);
    tcase_add_test(tc, deferral_comes_back_at_its_retry_time);
    tcase_add_test(tc, higher_priority_starts_before_a_backlog);
    tcase_add_test(tc, equal_priority_sets_alternate);
    tcase_add_test(tc, settle_writes_rows_and_events);
    tcase_add_test(tc, deferral_past_expiry_bounces);
    tcase_add_test(tc, stop_waits_for_in_flight_jobs);
    tcase_add_test(tc, config_change_reaches_the_executor);
    tcase_add_test(tc, settled_but_uncommitted_is_not_paged_again);
    tcase_add_test(tc, failed_commit_is_retried_and_lands_once);
    tcase_add_test(tc, counts_with_recipients_in_the_spool_only);
    tcase_add_test(tc, per_recipient_set_gets_one_job_per_recipient);
    tcase_add_test(tc, reload_to_per_recipient_splits_waiting_jobs);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(scheduler_suite);
