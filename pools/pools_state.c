/* pools_state.c — the dedicated-IP state as JSON (jansson) for the spool's kv table:
 * pools_state_json writes lease times, warm-up positions, usage windows, managed caps,
 * zones down and complaint counts; pools_state_load validates a whole document before it changes anything, so a
 * bad or foreign state is refused with the JSON path of the problem and the pools keep
 * what they had. Pure: no I/O, no clock. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "pools/pools_internal.h"

#define POOLS_STATE_VERSION 1

/* ------------------------------------------------------------ persistence ---- */
/* {"version": 1, "zones_down": ["az2"],
 *  "ips": {"127.0.0.10": {"lease_ms": N, "config_done": false,
 *          "warmup": {"done": false, "base_pct": 30.0, "base_ms": N, "qualified": N,
 *                     "eval_day": N, "day_sent": N},
 *          "usage": [[minute, count], ...],
 *          "history": [[day, sent, cap], ...],
 *          "providers": {"gmail": {"cap": N, "usage": [[minute, count], ...],
 *                                  "history": [[day, sent, cap], ...]}}}},
 *  "complaints": {"marketing": {"gmail": [[hour, count], ...]}}}
 * minute = ms since the epoch / 60000, hour = ms / 3600000. "complaints" (complaints.h)
 * came later in version 1: a state without it loads with no complaints (and a kilnd that
 * does not know it ignores it). "history" (pools/history.h: recipients sent per UTC day,
 * day = ms / 86400000, and the cap at the day's last send, -1 for none) came later too and
 * is optional in the same way. Health is not saved: a restart probes afresh. */

static json_t *pools_usage_json(const warmup_window *w, int64_t now_ms, int64_t *mins, int64_t *counts)
{
    json_t *a = json_array();
    size_t n = warmup_window_live(w, now_ms, mins, counts);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("[II]", (json_int_t)mins[i], (json_int_t)counts[i]));
    return a;
}

static json_t *pools_history_json(const pools_daily *d)
{
    json_t *a = json_array();
    int64_t newest = INT64_MIN;
    for (size_t k = 0; k < POOLS_HISTORY_DAYS; k++)
        if (d->sent[k] > 0 && d->day[k] > newest) newest = d->day[k];
    if (newest == INT64_MIN) return a;
    for (int64_t day = newest - (POOLS_HISTORY_DAYS - 1); day <= newest; day++) {
        int64_t cap, sent = pools_daily_get(d, day, &cap);
        if (sent > 0)
            json_array_append_new(a, json_pack("[III]", (json_int_t)day, (json_int_t)sent,
                                               (json_int_t)cap));
    }
    return a;
}

char *pools_state_json(const pools *p)
{
    /* "Now" for the windows is the latest minute any of them saw: saving reads no clock. */
    int64_t *mins = util_calloc(WARMUP_BUCKETS, sizeof *mins);
    int64_t *counts = util_calloc(WARMUP_BUCKETS, sizeof *counts);
    json_t *root = json_object();
    json_object_set_new(root, "version", json_integer(POOLS_STATE_VERSION));
    json_t *zd = json_array();
    for (size_t i = 0; i < p->nzones; i++)
        if (!p->zones[i].up) json_array_append_new(zd, json_string(p->zones[i].name));
    json_object_set_new(root, "zones_down", zd);
    json_t *ips = json_object();
    for (size_t i = 0; i < p->nips; i++) {
        const pools_ip *ip = p->ips[i];
        json_t *o = json_object();
        json_object_set_new(o, "lease_ms", json_integer(ip->lease_ms));
        json_object_set_new(o, "config_done", json_boolean(ip->cfg_done));
        json_object_set_new(o, "warmup",
                            json_pack("{s:b,s:f,s:I,s:I,s:I,s:I}", "done", ip->ramp.done,
                                      "base_pct", ip->ramp.base_pct,
                                      "base_ms", (json_int_t)ip->ramp.base_ms,
                                      "qualified", (json_int_t)ip->ramp.qualified,
                                      "eval_day", (json_int_t)ip->ramp.eval_day,
                                      "day_sent", (json_int_t)ip->ramp.day_sent));
        json_object_set_new(o, "usage", pools_usage_json(&ip->usage, INT64_MIN, mins, counts));
        json_object_set_new(o, "history", pools_history_json(&ip->hist));
        json_t *prov = json_object();
        for (size_t j = 0; j < ip->ncaps; j++) {
            const managed_cap *c = ip->caps[j];
            json_object_set_new(prov, c->provider,
                                json_pack("{s:I,s:o,s:o}", "cap", (json_int_t)c->cap, "usage",
                                          pools_usage_json(&c->usage, INT64_MIN, mins, counts),
                                          "history", pools_history_json(&c->hist)));
        }
        json_object_set_new(o, "providers", prov);
        json_object_set_new(ips, ip->address, o);
    }
    json_object_set_new(root, "ips", ips);
    json_t *cpl = json_object();
    for (size_t i = 0; i < p->ncomplaints; i++) {
        const pools_complaints *c = p->complaints[i];
        json_t *hours = json_array();
        int64_t newest = INT64_MIN;                 /* the window of the newest bucket */
        for (size_t k = 0; k < COMPLAINTS_HOURS; k++)
            if (c->count[k] > 0 && c->hour[k] > newest) newest = c->hour[k];
        for (int64_t h = newest - (COMPLAINTS_HOURS - 1); newest != INT64_MIN && h <= newest; h++) {
            size_t k = (size_t)(((h % COMPLAINTS_HOURS) + COMPLAINTS_HOURS) % COMPLAINTS_HOURS);
            if (c->count[k] > 0 && c->hour[k] == h)
                json_array_append_new(hours, json_pack("[II]", (json_int_t)h, (json_int_t)c->count[k]));
        }
        if (json_array_size(hours) == 0) {
            json_decref(hours);
            continue;
        }
        json_t *po = json_object_get(cpl, c->pool);
        if (!po) {
            po = json_object();
            json_object_set_new(cpl, c->pool, po);
        }
        json_object_set_new(po, c->provider, hours);
    }
    json_object_set_new(root, "complaints", cpl);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    free(mins);
    free(counts);
    if (!s) util_fatal("pools: cannot encode the IP state as JSON");
    ((pools *)p)->dirty = false;   /* the save mark: p itself is never a const object */
    return s;
}

/* Validates (apply false) or applies (apply true) a parsed state; on validation each
 * problem becomes *err naming the JSON path. */
typedef struct loader {
    pools *p;
    int64_t now_ms;
    bool apply;
    char *err;
} loader;

static bool pools_load_fail(loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool pools_load_fail(loader *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *m = util_vasprintf(fmt, ap);
    va_end(ap);
    l->err = util_asprintf("pools state: %s", m);
    free(m);
    return false;
}

static bool pools_load_int(loader *l, json_t *o, const char *where, const char *key, int64_t min,
                    int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return pools_load_fail(l, "%s.%s: expected an integer", where, key);
    if (json_integer_value(v) < min)
        return pools_load_fail(l, "%s.%s: must be at least %lld", where, key, (long long)min);
    *out = json_integer_value(v);
    return true;
}

static bool pools_load_bool(loader *l, json_t *o, const char *where, const char *key, bool *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_boolean(v)) return pools_load_fail(l, "%s.%s: expected true or false", where, key);
    *out = json_is_true(v);
    return true;
}

/* usage: [[minute, count], ...] into w (when applying) */
static bool pools_load_usage(loader *l, json_t *a, const char *where, warmup_window *w)
{
    if (!json_is_array(a)) return pools_load_fail(l, "%s.usage: expected an array", where);
    if (w) warmup_window_init(w, l->now_ms);
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        json_t *m = json_array_get(e, 0), *c = json_array_get(e, 1);
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_integer(m) ||
            !json_is_integer(c) || json_integer_value(c) < 0)
            return pools_load_fail(l, "%s.usage[%zu]: expected [minute, count]", where, i);
        if (w) warmup_window_put(w, json_integer_value(m), json_integer_value(c), l->now_ms);
    }
    if (w) warmup_window_recompute(w, l->now_ms);
    return true;
}

/* history: [[day, sent, cap], ...] into d (when applying); optional (older states). */
static bool pools_load_history(loader *l, json_t *a, const char *where, pools_daily *d)
{
    if (!a) return true;
    if (!json_is_array(a)) return pools_load_fail(l, "%s.history: expected an array", where);
    if (d) memset(d, 0, sizeof *d);
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        json_t *day = json_array_get(e, 0), *n = json_array_get(e, 1), *c = json_array_get(e, 2);
        if (!json_is_array(e) || json_array_size(e) != 3 || !json_is_integer(day) ||
            !json_is_integer(n) || json_integer_value(n) < 0 || !json_is_integer(c) ||
            json_integer_value(c) < -1)
            return pools_load_fail(l, "%s.history[%zu]: expected [day, sent, cap]", where, i);
        if (d)
            pools_daily_put(d, json_integer_value(day), json_integer_value(n),
                            json_integer_value(c), l->now_ms);
    }
    return true;
}

static bool pools_load_ip(loader *l, const char *addr, json_t *o)
{
    char where[128];
    snprintf(where, sizeof where, "ips.%s", addr);
    if (!json_is_object(o)) return pools_load_fail(l, "%s: expected an object", where);
    int64_t lease = 0;
    bool cfg_done = false;
    if (!pools_load_int(l, o, where, "lease_ms", INT64_MIN, &lease) ||
        !pools_load_bool(l, o, where, "config_done", &cfg_done))
        return false;
    json_t *wo = json_object_get(o, "warmup");
    char wwhere[160];
    snprintf(wwhere, sizeof wwhere, "%s.warmup", where);
    if (!json_is_object(wo)) return pools_load_fail(l, "%s: expected an object", wwhere);
    warmup_ramp r;
    memset(&r, 0, sizeof r);
    json_t *pct = json_object_get(wo, "base_pct");
    if (!json_is_number(pct) || !(json_number_value(pct) >= 0) || json_number_value(pct) > 100)
        return pools_load_fail(l, "%s.base_pct: expected a number from 0 to 100", wwhere);
    r.base_pct = json_number_value(pct);
    if (!pools_load_bool(l, wo, wwhere, "done", &r.done) ||
        !pools_load_int(l, wo, wwhere, "base_ms", INT64_MIN, &r.base_ms) ||
        !pools_load_int(l, wo, wwhere, "qualified", 0, &r.qualified) ||
        !pools_load_int(l, wo, wwhere, "eval_day", 0, &r.eval_day) ||
        !pools_load_int(l, wo, wwhere, "day_sent", 0, &r.day_sent))
        return false;
    json_t *prov = json_object_get(o, "providers");
    if (!json_is_object(prov)) return pools_load_fail(l, "%s.providers: expected an object", where);

    pools_ip *ip = l->apply ? pools_find(l->p, addr) : NULL;
    if (l->apply && !ip) return true;           /* released meanwhile: forget its state */
    if (!pools_load_usage(l, json_object_get(o, "usage"), where, ip ? &ip->usage : NULL) ||
        !pools_load_history(l, json_object_get(o, "history"), where, ip ? &ip->hist : NULL))
        return false;
    if (ip) {
        ip->lease_ms = lease;
        ip->ramp = r;
        /* `warmup: done` written while kilnd was stopped: the operator declares it warm */
        if (!cfg_done && ip->cfg_done) warmup_ramp_start(&ip->ramp, 100, l->now_ms);
        pools_caps_free(ip);
    }
    const char *name;
    json_t *po;
    json_object_foreach(prov, name, po) {
        char pwhere[200];
        snprintf(pwhere, sizeof pwhere, "%s.providers.%s", where, name);
        if (!json_is_object(po)) return pools_load_fail(l, "%s: expected an object", pwhere);
        int64_t cap;
        if (!pools_load_int(l, po, pwhere, "cap", 1, &cap)) return false;
        managed_cap *c = NULL;
        if (ip) {
            if (cap < l->p->warmup.first_day) cap = l->p->warmup.first_day;
            if (cap > l->p->warmup.target) cap = l->p->warmup.target;
            c = pools_cap_add(ip, name, cap, l->now_ms);
        }
        if (!pools_load_usage(l, json_object_get(po, "usage"), pwhere, c ? &c->usage : NULL) ||
            !pools_load_history(l, json_object_get(po, "history"), pwhere, c ? &c->hist : NULL))
            return false;
    }
    return true;
}

/* complaints: {"pool": {"provider": [[hour, count], ...]}}; optional (older states). */
static bool pools_load_complaints(loader *l, json_t *cpl)
{
    if (!cpl) return true;
    if (!json_is_object(cpl)) return pools_load_fail(l, "complaints: expected an object");
    if (l->apply) pools_complaints_free(l->p);
    const char *pool;
    json_t *po;
    json_object_foreach(cpl, pool, po) {
        if (!json_is_object(po))
            return pools_load_fail(l, "complaints.%s: expected an object", pool);
        bool known = false;             /* a pool with no IP now: its complaints are moot */
        for (size_t k = 0; l->apply && k < l->p->nips && !known; k++)
            known = strcmp(l->p->ips[k]->pool, pool) == 0;
        const char *prov;
        json_t *a;
        json_object_foreach(po, prov, a) {
            if (!json_is_array(a))
                return pools_load_fail(l, "complaints.%s.%s: expected an array", pool, prov);
            size_t i;
            json_t *e;
            json_array_foreach(a, i, e) {
                json_t *h = json_array_get(e, 0), *c = json_array_get(e, 1);
                if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_integer(h) ||
                    !json_is_integer(c) || json_integer_value(c) < 0)
                    return pools_load_fail(l, "complaints.%s.%s[%zu]: expected [hour, count]",
                                           pool, prov, i);
                if (known)
                    pools_complaints_put(l->p, pool, prov, json_integer_value(h),
                                         json_integer_value(c), l->now_ms);
            }
        }
    }
    return true;
}

static bool pools_load_all(loader *l, json_t *root)
{
    if (!json_is_object(root)) return pools_load_fail(l, "expected a JSON object");
    int64_t version = 0;
    if (!pools_load_int(l, root, "state", "version", INT64_MIN, &version)) return false;
    if (version != POOLS_STATE_VERSION)
        return pools_load_fail(l, "version %lld is not supported (this kilnd reads version %d)",
                     (long long)version, POOLS_STATE_VERSION);
    json_t *zd = json_object_get(root, "zones_down");
    if (!json_is_array(zd)) return pools_load_fail(l, "zones_down: expected an array of zone names");
    size_t i;
    json_t *z;
    json_array_foreach(zd, i, z)
        if (!json_is_string(z)) return pools_load_fail(l, "zones_down[%zu]: expected a zone name", i);
    json_t *ips = json_object_get(root, "ips");
    if (!json_is_object(ips)) return pools_load_fail(l, "ips: expected an object");
    const char *addr;
    json_t *o;
    json_object_foreach(ips, addr, o)
        if (!pools_load_ip(l, addr, o)) return false;
    if (!pools_load_complaints(l, json_object_get(root, "complaints"))) return false;
    if (l->apply) {
        for (size_t k = 0; k < l->p->nzones; k++) {
            l->p->zones[k].up = true;
            json_array_foreach(zd, i, z)
                if (strcmp(json_string_value(z), l->p->zones[k].name) == 0)
                    l->p->zones[k].up = false;
        }
    }
    return true;
}

int pools_state_load(pools *p, const char *json, int64_t now_ms, char **err)
{
    json_error_t jerr;
    json_t *root = json_loads(json ? json : "", JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        *err = util_asprintf("pools state: not valid JSON (line %d: %s)", jerr.line, jerr.text);
        return -1;
    }
    loader l = {p, now_ms, false, NULL};
    if (!pools_load_all(&l, root)) {                  /* check everything before changing anything */
        json_decref(root);
        *err = l.err;
        return -1;
    }
    l.apply = true;
    if (!pools_load_all(&l, root)) util_fatal("pools: state validated but failed to apply: %s", l.err);
    json_decref(root);
    p->dirty = true;
    return 0;
}

bool pools_dirty(const pools *p)
{
    return p->dirty;
}
