/* spool_keep.c — kept writes (see spool.h, spool_keep_begin): when a batch fails, the writes
 * recorded as kept and the commit callbacks registered with them are carried, in their
 * order, to the head of the filling batch, ahead of everything recorded since, so the
 * writer commits them with that batch (after its wait, spool_writer.c) and their callbacks
 * run only once they are committed. The other writes of the failed batch are dropped and
 * their callbacks told ok=false, as before.
 *
 * Promises: the order of the writes as the loop recorded them is the order the database
 * sees them (a carried deferral never lands after the outcome that followed it); a kept
 * kv value or suppression entry stays visible to the loop's reads (the overlay) until it is
 * committed, unless a later write of the same key replaced it; a write that made its batch
 * fail by itself (a constraint, an unknown recipient: not the environment) is not carried,
 * so a failing write cannot stall the spool; a message body or an event handed over with a
 * _take call moves with its write, never copied. */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "store/spool_internal.h"

/* Whether op of failed batch b goes to the next batch. */
static bool spool_keep_carries(const spool_batch *b, size_t i)
{
    if (!b->ops[i].keep) return false;
    /* the write that failed by itself would fail again */
    return b->transient || b->fail_op != (long)i;
}

/* d = op, its strings copied into batch f's arena, an owned buffer moved. */
static void spool_keep_copy(spool_batch *f, spool_op *d, spool_op *op)
{
    *d = *op;
    op->owned = NULL;
    switch (op->kind) {
    case SPOOL_OP_ADD_MSG:
        d->u.msg.id = spool_batch_str(f, op->u.msg.id);
        d->u.msg.config_set = spool_batch_str(f, op->u.msg.config_set);
        d->u.msg.mail_from = spool_batch_str(f, op->u.msg.mail_from);
        d->u.msg.client_ip = spool_batch_str(f, op->u.msg.client_ip);
        d->u.msg.mail_json = spool_batch_str(f, op->u.msg.mail_json);
        /* the body is always the write's own buffer (owned), moved with it */
        break;
    case SPOOL_OP_ADD_RCPT:
        d->u.rcpt.msg_id = spool_batch_str(f, op->u.rcpt.msg_id);
        d->u.rcpt.address = spool_batch_str(f, op->u.rcpt.address);
        break;
    case SPOOL_OP_UPD_RCPT:
        d->u.upd.last_reply = spool_batch_str(f, op->u.upd.last_reply);
        break;
    case SPOOL_OP_GC_MSG:
        d->u.gc.msg_id = spool_batch_str(f, op->u.gc.msg_id);
        break;
    case SPOOL_OP_ADD_EVENT:
        d->u.event.set = spool_batch_str(f, op->u.event.set);
        if (!d->owned) d->u.event.json = spool_batch_str(f, op->u.event.json);
        break;
    case SPOOL_OP_SUPP_PUT:
    case SPOOL_OP_SUPP_DEL:
        d->u.supp.address = spool_batch_str(f, op->u.supp.address);
        d->u.supp.reason = spool_batch_str(f, op->u.supp.reason);
        break;
    case SPOOL_OP_KV_PUT:
    case SPOOL_OP_KV_DEL:
        d->u.kv.key = spool_batch_str(f, op->u.kv.key);
        d->u.kv.value = spool_batch_str(f, op->u.kv.value);
        break;
    case SPOOL_OP_FBIN_ADD:
        d->u.fbin.client_ip = spool_batch_str(f, op->u.fbin.client_ip);
        d->u.fbin.mail_from = spool_batch_str(f, op->u.fbin.mail_from);
        d->u.fbin.rcpts = spool_batch_str(f, op->u.fbin.rcpts);
        /* the report is the write's own buffer (owned), moved with it */
        break;
    case SPOOL_OP_DEL_EVENTS:
    case SPOOL_OP_STATS_ADD:
    case SPOOL_OP_SENT_PRUNE:
    case SPOOL_OP_FBIN_DEL:
        break;
    }
}

/* A carried kv or suppression write stays in the overlay, now as the filling batch's,
 * unless a later write of the key replaced it there. */
static void spool_keep_overlay(spool *sp, const spool_op *d, uint64_t failed_seq)
{
    bool supp = d->kind == SPOOL_OP_SUPP_PUT || d->kind == SPOOL_OP_SUPP_DEL;
    if (!supp && d->kind != SPOOL_OP_KV_PUT && d->kind != SPOOL_OP_KV_DEL) return;
    spool_overlay *o = supp ? &sp->supp : &sp->kv;
    const char *key = supp ? d->u.supp.address : d->u.kv.key;
    const spool_ov_entry *e = spool_overlay_get(o, key);
    if (e && e->seq == failed_seq) {
        if (supp)
            spool_overlay_put(o, key, d->kind == SPOOL_OP_SUPP_PUT ? d->u.supp.reason : NULL,
                              d->u.supp.at_ms, sp->filling->seq);
        else
            spool_overlay_put(o, key, d->kind == SPOOL_OP_KV_PUT ? d->u.kv.value : NULL, 0,
                              sp->filling->seq);
    }
    spool_touch_key(sp, supp, key);
}

void spool_keep_carry(spool *sp, spool_batch *b)
{
    spool_batch *f = sp->filling;
    size_t nk = 0, nc = 0;
    for (size_t i = 0; i < b->nops; i++) nk += spool_keep_carries(b, i);
    for (size_t i = 0; i < b->ncbs; i++) nc += b->cbs[i].keep;
    if (b->fail_op >= 0 && (size_t)b->fail_op < b->nops && b->ops[b->fail_op].keep &&
        !b->transient) {
        char *e = util_asprintf("%s (a kept write that cannot succeed: dropped)",
                                b->err ? b->err : "spool: commit failed");
        free(b->err);
        b->err = e;
    }
    sp->kept_waiting = nk;
    if (nk) {
        if (f->nops + nk > f->capops) {
            f->capops = f->nops + nk > 64 ? f->nops + nk : 64;
            f->ops = util_realloc(f->ops, f->capops * sizeof *f->ops);
        }
        memmove(f->ops + nk, f->ops, f->nops * sizeof *f->ops);
        size_t j = 0;
        for (size_t i = 0; i < b->nops; i++) {
            if (!spool_keep_carries(b, i)) continue;
            spool_op *d = &f->ops[j++];
            spool_keep_copy(f, d, &b->ops[i]);
            spool_keep_overlay(sp, d, b->seq);
        }
        f->nops += nk;
    }
    if (nc) {
        if (f->ncbs + nc > f->capcbs) {
            f->capcbs = f->ncbs + nc > 16 ? f->ncbs + nc : 16;
            f->cbs = util_realloc(f->cbs, f->capcbs * sizeof *f->cbs);
        }
        memmove(f->cbs + nc, f->cbs, f->ncbs * sizeof *f->cbs);
        size_t j = 0;
        for (size_t i = 0; i < b->ncbs; i++) {
            if (!b->cbs[i].keep) continue;
            f->cbs[j++] = b->cbs[i];
            b->cbs[i].cb = NULL;   /* runs with f */
        }
        f->ncbs += nc;
    }
}

void spool_keep_abandon(spool *sp, const char *why)
{
    spool_batch *f = sp->filling;
    char *err = util_asprintf("spool %s: %s", sp->path, why);
    for (size_t i = 0; i < f->ncbs; i++) {
        spool_cb_entry e = f->cbs[i];
        f->cbs[i].cb = NULL;
        if (e.cb) e.cb(e.arg, false, err);
    }
    f->ncbs = 0;
    free(err);
}
