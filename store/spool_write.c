/* spool_write.c — the loop's side of the spool's writes (see spool.h for the contract).
 *
 * A write call records one operation in the filling batch: its strings are copied into the
 * batch's arena (a message body or an event handed over with a _take call is kept as it is,
 * not copied), recipient ids are given out here in increasing order, and a kv value or a
 * suppression entry (or its deletion) also goes into an overlay that the reads consult until
 * the batch is reaped. The pipeline holds at most two batches: one with the writer thread
 * (spool_writer.c) and the filling one. spool_submit hands the filling batch over when the
 * writer is free; spool_reap takes the finished batch back, hands the next one over at once
 * (so the writer syncs while the callbacks run) and runs the finished batch's commit
 * callbacks in order; spool_flush waits. A batch with callbacks and no writes, with nothing
 * in flight, completes at once: everything written before it is committed. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/metrics.h"
#include "base/util.h"
#include "store/spool_internal.h"

#define SPOOL_ARENA_CHUNK (64 * 1024)

/* ---- the arena ---- */

static char *spool_arena_alloc(spool_arena *a, size_t n)
{
    spool_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > SPOOL_ARENA_CHUNK ? n : SPOOL_ARENA_CHUNK;
        c = util_malloc(sizeof *c + cap);
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    char *p = c->buf + c->used;
    c->used += (n + 7) & ~(size_t)7;
    if (c->used > c->cap) c->used = c->cap;
    return p;
}

const char *spool_batch_str(spool_batch *b, const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *p = spool_arena_alloc(&b->arena, n);
    memcpy(p, s, n);
    return p;
}

/* Keeps one standard chunk for the next use of the batch, frees the rest. */
static void spool_arena_reset(spool_arena *a)
{
    spool_arena_chunk *keep = NULL;
    for (spool_arena_chunk *c = a->head, *nx; c; c = nx) {
        nx = c->next;
        if (!keep && c->cap == SPOOL_ARENA_CHUNK) {
            keep = c;
            continue;
        }
        free(c);
    }
    if (keep) {
        keep->used = 0;
        keep->next = NULL;
    }
    a->head = keep;
}

/* ---- batches ---- */

spool_op *spool_record(spool *sp, spool_op_kind kind)
{
    spool_batch *b = sp->filling;
    if (b->nops == b->capops) {
        b->capops = b->capops ? b->capops * 2 : 64;
        b->ops = util_realloc(b->ops, b->capops * sizeof *b->ops);
    }
    spool_op *op = &b->ops[b->nops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->keep = sp->keep_depth > 0;
    return op;
}

void spool_touch_key(spool *sp, bool supp, const char *key)
{
    spool_batch *b = sp->filling;
    if (b->ntouched == b->captouched) {
        b->captouched = b->captouched ? b->captouched * 2 : 8;
        b->touched = util_realloc(b->touched, b->captouched * sizeof *b->touched);
    }
    b->touched[b->ntouched++] = (spool_touch){supp, key};
}

static void spool_batch_free(spool_batch *b)
{
    if (!b) return;
    for (size_t i = 0; i < b->nops; i++) free(b->ops[i].owned);
    spool_arena_reset(&b->arena);
    free(b->arena.head);
    free(b->ops);
    free(b->cbs);
    free(b->touched);
    free(b->err);
    free(b);
}

/* A reaped batch becomes the spare (its arrays and first arena chunk are reused). */
static void spool_batch_recycle(spool *sp, spool_batch *b)
{
    if (sp->spare) {
        spool_batch_free(b);
        return;
    }
    for (size_t i = 0; i < b->nops; i++) free(b->ops[i].owned);
    spool_arena_reset(&b->arena);
    free(b->err);
    b->err = NULL;
    b->nops = b->ncbs = b->ntouched = 0;
    b->ok = false;
    sp->spare = b;
}

/* A new filling batch (the old one was handed over or completed). */
static void spool_new_filling(spool *sp)
{
    sp->filling = sp->spare ? sp->spare : util_calloc(1, sizeof *sp->filling);
    sp->spare = NULL;
    sp->filling->seq = ++sp->next_seq;
}

void spool_pipeline_init(spool *sp)
{
    pthread_mutex_init(&sp->w.mu, NULL);
    pthread_condattr_t ca;   /* the writer's timed waits (its backoff) use the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sp->w.work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&sp->w.done, NULL);
    spool_new_filling(sp);
    sp->reaped_seq = sp->filling->seq - 1;
}

void spool_pipeline_free(spool *sp)
{
    spool_batch_free(sp->filling);
    spool_batch_free(sp->inflight);
    spool_batch_free(sp->spare);
    sp->filling = sp->inflight = sp->spare = NULL;
    spool_overlay_free(&sp->kv);
    spool_overlay_free(&sp->supp);
    pthread_cond_destroy(&sp->w.done);
    pthread_cond_destroy(&sp->w.work);
    pthread_mutex_destroy(&sp->w.mu);
}

/* ---- the pipeline ---- */

/* Hands the filling batch to the writer if the writer is free and the batch has writes. */
static void spool_handover(spool *sp)
{
    if (sp->inflight || sp->filling->nops == 0) return;
    spool_batch *b = sp->filling;
    spool_new_filling(sp);
    b->keep_sent = sp->keep_sent;   /* the writer reads it from the batch, after the mutex */
    b->handed_ms = util_mono_ms();
    sp->inflight = b;
    spool_writer_submit(&sp->w, b);
}

/* b is finished (committed, failed, or without writes): its overlay entries go, then its
 * callbacks run in order. 0, or -1 if it failed. */
static int spool_finish(spool *sp, spool_batch *b)
{
    /* the bodies are written (or never will be): freed before the callbacks, which may
     * read the same messages back (the scheduler loads a committed message) */
    for (size_t i = 0; i < b->nops; i++) {
        free(b->ops[i].owned);
        b->ops[i].owned = NULL;
    }
    for (size_t i = 0; i < b->ntouched; i++)
        spool_overlay_settle(b->touched[i].supp ? &sp->supp : &sp->kv, b->touched[i].key, b->seq);
    sp->reaped_seq = b->seq;
    if (!b->ok) spool_set_last_err(sp, util_strdup(b->err ? b->err : "spool: commit failed"));
    if (b->ok && b->nops) sp->failures = 0;
    else if (!b->ok) sp->failures++;
    for (size_t i = 0; i < b->ncbs; i++)
        if (b->cbs[i].cb) b->cbs[i].cb(b->cbs[i].arg, b->ok, b->ok ? NULL : b->err);
    int rc = b->ok ? 0 : -1;
    spool_batch_recycle(sp, b);
    return rc;
}

/* Moves the pipeline on: hands the filling batch over, or, with nothing in flight,
 * completes a filling batch that has only callbacks. */
static int spool_advance(spool *sp)
{
    spool_handover(sp);
    if (sp->inflight || sp->filling->ncbs == 0) return 0;
    spool_batch *b = sp->filling;
    spool_new_filling(sp);
    b->ok = true;
    return spool_finish(sp, b);
}

void spool_submit(spool *sp)
{
    spool_advance(sp);
}

int spool_reap(spool *sp)
{
    if (!sp->inflight) return spool_advance(sp);
    spool_batch *b = spool_writer_take_done(&sp->w);
    if (!b) return 0;
    sp->inflight = NULL;
    if (sp->metrics) {   /* on the loop thread: hand-over to reap */
        metrics_observe(sp->metrics, "kiln_spool_commit_seconds", NULL,
                        (double)(util_mono_ms() - b->handed_ms) / 1000);
        metrics_observe(sp->metrics, "kiln_spool_batch_writes", NULL, (double)b->nops);
    }
    if (b->ok) sp->kept_waiting = 0;
    else spool_keep_carry(sp, b);   /* kept writes go first in the next batch */
    spool_handover(sp);   /* the writer goes on while the callbacks run */
    int rc = spool_finish(sp, b);
    if (spool_advance(sp) < 0) rc = -1;
    return rc;
}

int spool_flush(spool *sp)
{
    uint64_t target;
    if (sp->filling->nops || sp->filling->ncbs) target = sp->filling->seq;
    else if (sp->inflight) target = sp->inflight->seq;
    else return 0;
    int rc = 0;
    while (sp->reaped_seq < target) {
        if (sp->inflight) {
            spool_writer_wait(&sp->w);
            if (spool_reap(sp) < 0) rc = -1;
        } else if (sp->filling->nops || sp->filling->ncbs) {
            if (spool_advance(sp) < 0) rc = -1;
        } else {
            break;
        }
    }
    return rc;
}

void spool_pipeline_abandon(spool *sp, const char *why)
{
    if (sp->inflight) {
        spool_writer_wait(&sp->w);
        spool_batch *b = spool_writer_take_done(&sp->w);
        sp->inflight = NULL;
        if (b) {
            if (!b->ok) spool_keep_carry(sp, b);
            spool_finish(sp, b);
        }
    }
    size_t lost = 0;
    for (size_t i = 0; i < sp->filling->nops; i++) lost += sp->filling->ops[i].keep;
    if (lost) {
        char *e = util_asprintf("spool %s: %zu kept writes not committed at close: %s", sp->path,
                                lost, why);
        spool_set_last_err(sp, e);
    }
    spool_keep_abandon(sp, why);
}

bool spool_has_pending(const spool *sp)
{
    return sp->inflight || sp->filling->nops || sp->filling->ncbs;
}

void spool_on_commit(spool *sp, spool_commit_cb cb, void *arg)
{
    spool_batch *b = sp->filling;
    if (b->ncbs == b->capcbs) {
        b->capcbs = b->capcbs ? b->capcbs * 2 : 16;
        b->cbs = util_realloc(b->cbs, b->capcbs * sizeof *b->cbs);
    }
    b->cbs[b->ncbs++] = (spool_cb_entry){cb, arg, sp->keep_depth > 0};
}

void spool_keep_begin(spool *sp)
{
    sp->keep_depth++;
}

void spool_keep_end(spool *sp)
{
    if (sp->keep_depth <= 0) util_fatal("spool %s: spool_keep_end without spool_keep_begin", sp->path);
    sp->keep_depth--;
}

size_t spool_kept_waiting(const spool *sp)
{
    return sp->kept_waiting;
}

unsigned spool_failures(const spool *sp)
{
    return sp->failures;
}

void spool_set_metrics(spool *sp, struct metrics *m)
{
    sp->metrics = m;
}

void spool_set_wake(spool *sp, void (*wake)(void *arg), void *arg)
{
    pthread_mutex_lock(&sp->w.mu);
    sp->w.wake = wake;
    sp->w.wake_arg = arg;
    pthread_mutex_unlock(&sp->w.mu);
}

/* ---- overlays, for the reads ---- */

bool spool_pending_kv(spool *sp, const char *key, char **value)
{
    const spool_ov_entry *e = spool_overlay_get(&sp->kv, key ? key : "");
    if (!e) return false;
    *value = e->value ? util_strdup(e->value) : NULL;
    return true;
}

bool spool_pending_suppression(spool *sp, const char *lc, bool *found, char **reason,
                               int64_t *updated_ms)
{
    const spool_ov_entry *e = spool_overlay_get(&sp->supp, lc);
    if (!e) return false;
    *found = e->value != NULL;
    if (reason) *reason = e->value ? util_strdup(e->value) : NULL;
    if (updated_ms) *updated_ms = e->value ? e->at_ms : 0;
    return true;
}

/* ---- the writes ---- */

static void spool_check_id(const spool_message *m)
{
    size_t idlen = strnlen(m->id, sizeof m->id);
    if (idlen == sizeof m->id || idlen == 0)
        util_fatal("spool_add_message: message id is empty or not NUL-terminated");
}

static spool_op *spool_record_message(spool *sp, const spool_message *m)
{
    spool_check_id(m);
    spool_batch *b = sp->filling;
    spool_op *op = spool_record(sp, SPOOL_OP_ADD_MSG);
    op->u.msg.id = spool_batch_str(b, m->id);
    op->u.msg.config_set = spool_batch_str(b, m->config_set);
    op->u.msg.mail_from = spool_batch_str(b, m->mail_from);
    op->u.msg.client_ip = spool_batch_str(b, m->client_ip);
    op->u.msg.mail_json = spool_batch_str(b, m->mail_json);
    op->u.msg.data_len = m->data ? m->data_len : 0;
    op->u.msg.created_ms = m->created_ms;
    op->u.msg.quota_count = m->quota_count;
    return op;
}

int spool_add_message(spool *sp, const spool_message *m)
{
    spool_op *op = spool_record_message(sp, m);
    if (op->u.msg.data_len) {
        char *copy = util_malloc(op->u.msg.data_len);
        memcpy(copy, m->data, op->u.msg.data_len);
        op->owned = copy;
        op->u.msg.data = copy;
    }
    return 0;
}

int spool_add_message_take(spool *sp, const spool_message *m)
{
    spool_op *op = spool_record_message(sp, m);
    op->owned = (void *)m->data;
    op->u.msg.data = m->data;
    return 0;
}

int spool_add_rcpt(spool *sp, const char *msg_id, const char *address, spool_rcpt_state st,
                   int64_t *rowid)
{
    spool_op *op = spool_record(sp, SPOOL_OP_ADD_RCPT);
    op->u.rcpt.id = sp->next_rcpt_id++;
    op->u.rcpt.msg_id = spool_batch_str(sp->filling, msg_id ? msg_id : "");
    op->u.rcpt.address = spool_batch_str(sp->filling, address ? address : "");
    op->u.rcpt.state = (int)st;
    if (rowid) *rowid = op->u.rcpt.id;
    return 0;
}

int spool_update_rcpt(spool *sp, int64_t rowid, spool_rcpt_state state, int attempts,
                      int64_t next_attempt_ms, const char *last_reply)
{
    spool_op *op = spool_record(sp, SPOOL_OP_UPD_RCPT);
    op->u.upd.id = rowid;
    op->u.upd.state = (int)state;
    op->u.upd.attempts = attempts;
    op->u.upd.next_ms = next_attempt_ms;
    op->u.upd.last_reply = spool_batch_str(sp->filling, last_reply);
    return 0;
}

int spool_message_gc(spool *sp, const char *msg_id)
{
    spool_op *op = spool_record(sp, SPOOL_OP_GC_MSG);
    op->u.gc.msg_id = spool_batch_str(sp->filling, msg_id ? msg_id : "");
    return 0;
}

int spool_add_event(spool *sp, const char *set, const char *json)
{
    spool_op *op = spool_record(sp, SPOOL_OP_ADD_EVENT);
    op->u.event.set = spool_batch_str(sp->filling, set ? set : "");
    op->u.event.json = spool_batch_str(sp->filling, json ? json : "");
    return 0;
}

int spool_add_event_take(spool *sp, const char *set, char *json)
{
    spool_op *op = spool_record(sp, SPOOL_OP_ADD_EVENT);
    op->u.event.set = spool_batch_str(sp->filling, set ? set : "");
    op->owned = json;
    op->u.event.json = json ? json : "";
    return 0;
}

int spool_delete_events(spool *sp, int64_t upto)
{
    spool_op *op = spool_record(sp, SPOOL_OP_DEL_EVENTS);
    op->u.del_events.upto = upto;
    return 0;
}

/* The address lower-cased, in the filling batch. */
static const char *spool_batch_lower(spool *sp, const char *address)
{
    char *lc = (char *)spool_batch_str(sp->filling, address ? address : "");
    util_lowercase(lc);
    return lc;
}

static void spool_supp_record_put(spool *sp, const char *address, const char *reason,
                                  int64_t now_ms)
{
    spool_op *op = spool_record(sp, SPOOL_OP_SUPP_PUT);
    op->u.supp.address = spool_batch_lower(sp, address);
    op->u.supp.reason = spool_batch_str(sp->filling, reason ? reason : "");
    op->u.supp.at_ms = now_ms;
    spool_overlay_put(&sp->supp, op->u.supp.address, op->u.supp.reason, now_ms,
                      sp->filling->seq);
    spool_touch_key(sp, true, op->u.supp.address);
    if (sp->supp_hook) sp->supp_hook(sp->supp_hook_arg, op->u.supp.address, op->u.supp.reason,
                                     now_ms);
}

static const char *spool_supp_record_delete(spool *sp, const char *address)
{
    spool_op *op = spool_record(sp, SPOOL_OP_SUPP_DEL);
    op->u.supp.address = spool_batch_lower(sp, address);
    spool_overlay_put(&sp->supp, op->u.supp.address, NULL, 0, sp->filling->seq);
    spool_touch_key(sp, true, op->u.supp.address);
    return op->u.supp.address;
}

int spool_suppression_put(spool *sp, const char *address, const char *reason, int64_t now_ms)
{
    spool_supp_record_put(sp, address, reason, now_ms);
    return 0;
}

int spool_suppression_delete(spool *sp, const char *address, bool *existed)
{
    bool found = false;
    if (existed) *existed = false;
    if (spool_suppression_get(sp, address, &found, NULL, NULL) != 0) return -1;
    if (existed) *existed = found;
    const char *lc = spool_supp_record_delete(sp, address);
    if (sp->supp_hook) sp->supp_hook(sp->supp_hook_arg, lc, NULL, 0);
    return 0;
}

void spool_set_suppression_hook(spool *sp, spool_suppression_hook fn, void *arg)
{
    sp->supp_hook = fn;
    sp->supp_hook_arg = arg;
}

int spool_suppression_apply(spool *sp, const char *address, const char *reason, int64_t at_ms)
{
    spool_suppression_hook fn = sp->supp_hook;
    sp->supp_hook = NULL;
    if (reason) spool_supp_record_put(sp, address, reason, at_ms);
    else spool_supp_record_delete(sp, address);
    sp->supp_hook = fn;
    return 0;
}

int spool_kv_put(spool *sp, const char *key, const char *value)
{
    spool_op *op = spool_record(sp, SPOOL_OP_KV_PUT);
    op->u.kv.key = spool_batch_str(sp->filling, key ? key : "");
    op->u.kv.value = spool_batch_str(sp->filling, value ? value : "");
    spool_overlay_put(&sp->kv, op->u.kv.key, op->u.kv.value, 0, sp->filling->seq);
    spool_touch_key(sp, false, op->u.kv.key);
    return 0;
}

int spool_kv_delete(spool *sp, const char *key, bool *existed)
{
    if (existed) *existed = false;
    char *old = NULL;
    if (spool_kv_get(sp, key, &old) != 0) return -1;
    if (existed) *existed = old != NULL;
    free(old);
    spool_op *op = spool_record(sp, SPOOL_OP_KV_DEL);
    op->u.kv.key = spool_batch_str(sp->filling, key ? key : "");
    spool_overlay_put(&sp->kv, op->u.kv.key, NULL, 0, sp->filling->seq);
    spool_touch_key(sp, false, op->u.kv.key);
    return 0;
}

int spool_stats_add(spool *sp, int64_t bucket_ms, int64_t attempts, int64_t bounces,
                    int64_t complaints, int64_t rejects)
{
    spool_op *op = spool_record(sp, SPOOL_OP_STATS_ADD);
    op->u.stats.bucket_ms = bucket_ms;
    op->u.stats.attempts = attempts;
    op->u.stats.bounces = bounces;
    op->u.stats.complaints = complaints;
    op->u.stats.rejects = rejects;
    return 0;
}
