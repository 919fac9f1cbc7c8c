/* dkim_keys.c — the DKIM keys kilnd signs with (see dkim_keys.h): BYODKIM keys from the
 * config, Easy DKIM keys in <spool>/dkim/<domain>/ ("<sel>.rsa.pem", and for dual signing
 * "<sel>.ed25519.pem" whose selector is "<sel>e"; "active" holds the selector in use).
 * Keys are few (one or two per domain, a few domains), so a flat array serves. */
#include "mta/dkim_keys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

typedef struct dkim_keys_entry {
    char *domain;
    char *selector;          /* the DNS selector */
    char *group;             /* Easy DKIM: the generation it belongs to (its RSA selector) */
    dkim_key *key;
    bool easy, active, live;
    int64_t created_ms;
    char *txt, *p;
} dkim_keys_entry;

struct dkim_keys {
    char *dir;               /* <spool>/dkim */
    klog *lg;
    dkim_keys_entry *v;
    size_t n;
};

static void dkim_keys_entry_clear(dkim_keys_entry *e)
{
    free(e->domain);
    free(e->selector);
    free(e->group);
    dkim_key_free(e->key);
    free(e->txt);
    free(e->p);
}

static void dkim_keys_clear(dkim_keys_entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++) dkim_keys_entry_clear(&v[i]);
    free(v);
}

dkim_keys *dkim_keys_new(const char *spool_dir, klog *lg)
{
    dkim_keys *k = util_calloc(1, sizeof *k);
    k->dir = util_asprintf("%s/dkim", spool_dir);
    k->lg = lg;
    return k;
}

void dkim_keys_free(dkim_keys *k)
{
    if (!k) return;
    dkim_keys_clear(k->v, k->n);
    free(k->dir);
    free(k);
}

/* A domain name safe as a directory name: lower-case letters, digits, '-', '.', no "..". */
static bool dkim_keys_safe_name(const char *s)
{
    if (!*s || *s == '.' || strlen(s) > 253 || strstr(s, "..")) return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '.'))
            return false;
    return true;
}

static void dkim_keys_push(dkim_keys_entry **v, size_t *n, const char *domain, const char *sel,
                           const char *group, dkim_key *key, bool easy, bool active,
                           int64_t created_ms)
{
    *v = util_realloc(*v, (*n + 1) * sizeof **v);
    dkim_keys_entry *e = &(*v)[(*n)++];
    memset(e, 0, sizeof *e);
    e->domain = util_strdup(domain);
    e->selector = util_strdup(sel);
    e->group = group ? util_strdup(group) : NULL;
    e->key = key;
    e->easy = easy;
    e->active = active;
    e->created_ms = created_ms;
    e->txt = dkim_key_txt_record(key);
    e->p = dkim_key_public_b64(key);
}

static const char *dkim_keys_domain_of(const char *identity)
{
    const char *at = strrchr(identity, '@');
    return at ? at + 1 : identity;
}

static char *dkim_keys_read_active(const char *ddir)
{
    char *path = util_asprintf("%s/active", ddir);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f) return NULL;
    char buf[80] = "";
    char *r = fgets(buf, sizeof buf, f) ? util_strdup(buf) : NULL;
    fclose(f);
    if (r) r[strcspn(r, "\r\n")] = '\0';
    return r;
}

/* Easy DKIM keys of one domain directory. */
static int dkim_keys_load_domain(dkim_keys *k, const char *domain, dkim_keys_entry **v, size_t *n,
                                 char **err)
{
    char *ddir = util_asprintf("%s/%s", k->dir, domain);
    char *active = dkim_keys_read_active(ddir);
    DIR *d = opendir(ddir);
    int rc = 0;
    if (!d) goto out;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        bool rsa = len > 8 && strcmp(name + len - 8, ".rsa.pem") == 0;
        bool ed = len > 12 && strcmp(name + len - 12, ".ed25519.pem") == 0;
        if (!rsa && !ed) continue;
        char *group = util_strndup(name, len - (rsa ? 8 : 12));
        char *path = util_asprintf("%s/%s", ddir, name);
        struct stat st;
        int64_t created = stat(path, &st) == 0 ? (int64_t)st.st_mtime * 1000 : 0;
        dkim_key *key = dkim_key_load_file(path, err);
        if (!key) {
            rc = -1;
        } else {
            char *sel = ed ? util_asprintf("%se", group) : util_strdup(group);
            dkim_keys_push(v, n, domain, sel, group, key, true, active && strcmp(active, group) == 0,
                           created);
            free(sel);
        }
        free(group);
        free(path);
    }
    closedir(d);
out:
    free(active);
    free(ddir);
    return rc;
}

/* The live flag of an equal key known before a reload. */
static bool dkim_keys_was_live(const dkim_keys *k, const dkim_keys_entry *e)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->v[i].domain, e->domain) == 0 && strcmp(k->v[i].selector, e->selector) == 0 &&
            strcmp(k->v[i].p, e->p) == 0)
            return k->v[i].live;
    return false;
}

static bool dkim_keys_byo(const config *cfg, const char *domain)
{
    for (size_t i = 0; i < cfg->nidentities; i++)
        if (cfg->identity_auth && cfg->identity_auth[i].dkim.selector &&
            strcmp(dkim_keys_domain_of(cfg->identities[i]), domain) == 0)
            return true;
    return false;
}

int dkim_keys_load(dkim_keys *k, const config *cfg, char **err)
{
    dkim_keys_entry *v = NULL;
    size_t n = 0;
    for (size_t i = 0; i < cfg->nidentities && cfg->identity_auth; i++) {
        const config_identity *id = &cfg->identity_auth[i];
        if (!id->dkim.selector) continue;
        const char *domain = dkim_keys_domain_of(cfg->identities[i]);
        const config_dkim_key *keys[2] = {&id->dkim, &id->dkim_ed25519};
        for (int j = 0; j < 2; j++) {
            if (!keys[j]->selector) continue;
            char *e = NULL;
            dkim_key *key = dkim_key_load_file(keys[j]->private_key_file, &e);
            if (key && j == 1 && dkim_key_alg(key) != DKIM_ALG_ED25519_SHA256) {
                free(e);
                e = util_asprintf("%s is an RSA key; dkim.ed25519 needs an Ed25519 key",
                                  keys[j]->private_key_file);
                dkim_key_free(key);
                key = NULL;
            }
            if (!key) {
                *err = util_asprintf("identity %s: dkim%s: %s", cfg->identities[i],
                                     j ? ".ed25519" : "", e ? e : "cannot load the key");
                free(e);
                dkim_keys_clear(v, n);
                return -1;
            }
            dkim_keys_push(&v, &n, domain, keys[j]->selector, NULL, key, false, true, 0);
        }
    }
    DIR *d = opendir(k->dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!dkim_keys_safe_name(de->d_name) || dkim_keys_byo(cfg, de->d_name)) continue;
            char *e = NULL;
            if (dkim_keys_load_domain(k, de->d_name, &v, &n, &e) < 0) {
                *err = util_asprintf("Easy DKIM keys of %s: %s", de->d_name, e ? e : "unreadable");
                free(e);
                closedir(d);
                dkim_keys_clear(v, n);
                return -1;
            }
        }
        closedir(d);
    }
    for (size_t i = 0; i < n; i++) v[i].live = dkim_keys_was_live(k, &v[i]);
    dkim_keys_clear(k->v, k->n);
    k->v = v;
    k->n = n;
    return 0;
}

dkim_keys_sel *dkim_keys_selectors(dkim_keys *k, const char *domain, size_t *n)
{
    dkim_keys_sel *out = util_calloc(k->n ? k->n : 1, sizeof *out);
    *n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < k->n; i++) {
            const dkim_keys_entry *e = &k->v[i];
            if (strcmp(e->domain, domain) != 0 || e->active != (pass == 0)) continue;
            dkim_keys_sel *s = &out[(*n)++];
            snprintf(s->selector, sizeof s->selector, "%s", e->selector);
            s->alg = dkim_key_alg(e->key);
            s->bits = dkim_key_bits(e->key);
            s->easy = e->easy;
            s->active = e->active;
            s->live = e->live;
            s->created_ms = e->created_ms;
            s->txt = util_strdup(e->txt);
            s->p = util_strdup(e->p);
        }
    return out;
}

void dkim_keys_sels_free(dkim_keys_sel *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].txt);
        free(v[i].p);
    }
    free(v);
}

size_t dkim_keys_signers(dkim_keys *k, const config *cfg, const char *from_addr,
                         dkim_signer out[2], int *id_index, bool *required)
{
    int idx = config_identity_index(cfg, from_addr);
    *id_index = idx;
    *required = idx >= 0 && cfg->identity_auth && cfg->identity_auth[idx].dkim_required;
    if (idx < 0) return 0;
    const char *domain = dkim_keys_domain_of(cfg->identities[idx]);
    size_t n = 0;
    for (int alg = 0; alg < 2; alg++)   /* RSA first */
        for (size_t i = 0; i < k->n && n < 2; i++) {
            const dkim_keys_entry *e = &k->v[i];
            if (!e->active || (e->easy && !e->live) || strcmp(e->domain, domain) != 0) continue;
            if ((int)dkim_key_alg(e->key) != alg) continue;
            out[n++] = (dkim_signer){.domain = e->domain, .selector = e->selector, .key = e->key};
        }
    return n;
}

static bool dkim_keys_domain_known(const config *cfg, const char *domain)
{
    for (size_t i = 0; i < cfg->nidentities; i++)
        if (strcmp(dkim_keys_domain_of(cfg->identities[i]), domain) == 0) return true;
    return false;
}

static int dkim_keys_write_active(const char *ddir, const char *group, char **err)
{
    char *tmp = util_asprintf("%s/active.tmp", ddir);
    char *path = util_asprintf("%s/active", ddir);
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        char *line = util_asprintf("%s\n", group);
        bool ok = write(fd, line, strlen(line)) == (ssize_t)strlen(line) && fsync(fd) == 0;
        free(line);
        if (close(fd) == 0 && ok && rename(tmp, path) == 0) rc = 0;
    }
    if (rc < 0) *err = util_asprintf("cannot write %s: %s", path, strerror(errno));
    free(tmp);
    free(path);
    return rc;
}

int dkim_keys_generate(dkim_keys *k, const config *cfg, const char *domain, const char *selector,
                       bool ed25519, char **sel_out, char **err)
{
    if (!dkim_keys_safe_name(domain) || !dkim_keys_domain_known(cfg, domain)) {
        *err = util_asprintf("%s is not a verified identity's domain (account.identities)", domain);
        return -1;
    }
    if (dkim_keys_byo(cfg, domain)) {
        *err = util_asprintf("%s signs with its own key (BYODKIM: account.identities[].dkim."
                             "private_key_file); Easy DKIM keys would not be used", domain);
        return -1;
    }
    char date[16];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "kiln%Y%m%d", &tm);
    char *sel = NULL;
    for (int i = 1; !sel && i < 100; i++) {
        char *cand = selector ? util_strdup(selector)
                              : (i == 1 ? util_strdup(date) : util_asprintf("%s-%d", date, i));
        bool taken = false;
        for (size_t j = 0; j < k->n; j++)
            if (strcmp(k->v[j].domain, domain) == 0 &&
                (strcmp(k->v[j].selector, cand) == 0 || (k->v[j].group && strcmp(k->v[j].group, cand) == 0)))
                taken = true;
        if (!taken) sel = cand;
        else free(cand);
        if (selector) break;
    }
    if (!sel) {
        *err = util_asprintf("selector %s of %s exists already", selector ? selector : date, domain);
        return -1;
    }
    bool first = true;
    for (size_t j = 0; j < k->n; j++)
        if (strcmp(k->v[j].domain, domain) == 0) first = false;
    char *ddir = util_asprintf("%s/%s", k->dir, domain);
    int rc = -1;
    dkim_key *rsa = NULL, *ed = NULL;
    char *prsa = util_asprintf("%s/%s.rsa.pem", ddir, sel);
    char *ped = util_asprintf("%s/%s.ed25519.pem", ddir, sel);
    if ((mkdir(k->dir, 0700) < 0 && errno != EEXIST) || (mkdir(ddir, 0700) < 0 && errno != EEXIST)) {
        *err = util_asprintf("cannot create %s: %s", ddir, strerror(errno));
        goto out;
    }
    rsa = dkim_key_generate(DKIM_ALG_RSA_SHA256, err);
    if (!rsa || (ed25519 && !(ed = dkim_key_generate(DKIM_ALG_ED25519_SHA256, err)))) goto out;
    if (dkim_key_write_pem(rsa, prsa, err) < 0) goto out;
    if (ed && dkim_key_write_pem(ed, ped, err) < 0) {
        unlink(prsa);
        goto out;
    }
    if (first && dkim_keys_write_active(ddir, sel, err) < 0) {
        unlink(prsa);
        if (ed) unlink(ped);
        goto out;
    }
    int64_t now_ms = (int64_t)now * 1000;
    dkim_keys_push(&k->v, &k->n, domain, sel, sel, rsa, true, first, now_ms);
    rsa = NULL;
    if (ed) {
        char *esel = util_asprintf("%se", sel);
        dkim_keys_push(&k->v, &k->n, domain, esel, sel, ed, true, first, now_ms);
        free(esel);
        ed = NULL;
    }
    log_write(k->lg, KLOG_INFO, "dkim.generate", "domain=%s selector=%s ed25519=%d active=%d",
              domain, sel, ed25519, first);
    *sel_out = sel;
    sel = NULL;
    rc = 0;
out:
    dkim_key_free(rsa);
    dkim_key_free(ed);
    free(prsa);
    free(ped);
    free(ddir);
    free(sel);
    return rc;
}

int dkim_keys_rotate(dkim_keys *k, const char *domain, char **sel_out, char **err)
{
    const dkim_keys_entry *next = NULL;
    bool any = false;
    for (size_t i = 0; i < k->n; i++) {
        const dkim_keys_entry *e = &k->v[i];
        if (!e->easy || strcmp(e->domain, domain) != 0) continue;
        any = true;
        if (e->active || dkim_key_alg(e->key) != DKIM_ALG_RSA_SHA256) continue;
        if (!next || e->created_ms > next->created_ms ||
            (e->created_ms == next->created_ms && strcmp(e->group, next->group) > 0))
            next = e;
    }
    if (!any) {
        *err = util_asprintf("%s has no Easy DKIM keys (kilnctl identity dkim generate %s)", domain,
                             domain);
        return -1;
    }
    if (!next) {
        *err = util_asprintf("%s has no other selector to rotate to: generate one first "
                             "(kilnctl identity dkim generate %s --selector NEW)", domain, domain);
        return -1;
    }
    const char *group = next->group;
    for (size_t i = 0; i < k->n; i++)
        if (k->v[i].easy && strcmp(k->v[i].domain, domain) == 0 &&
            strcmp(k->v[i].group, group) == 0 && !k->v[i].live) {
            *err = util_asprintf("the record of %s._domainkey.%s was not seen live yet: publish it "
                                 "and check with kilnctl identity status %s", k->v[i].selector,
                                 domain, domain);
            return -1;
        }
    char *ddir = util_asprintf("%s/%s", k->dir, domain);
    char *g = util_strdup(group);
    int rc = dkim_keys_write_active(ddir, g, err);
    free(ddir);
    if (rc == 0) {
        for (size_t i = 0; i < k->n; i++)
            if (k->v[i].easy && strcmp(k->v[i].domain, domain) == 0)
                k->v[i].active = strcmp(k->v[i].group, g) == 0;
        log_write(k->lg, KLOG_INFO, "dkim.rotate", "domain=%s selector=%s", domain, g);
        *sel_out = g;
    } else {
        free(g);
    }
    return rc;
}

void dkim_keys_set_live(dkim_keys *k, const char *domain, const char *selector, bool live)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->v[i].domain, domain) == 0 && strcmp(k->v[i].selector, selector) == 0 &&
            k->v[i].live != live) {
            k->v[i].live = live;
            log_write(k->lg, KLOG_INFO, "dkim.record", "domain=%s selector=%s live=%d%s", domain,
                      selector, live,
                      k->v[i].easy && k->v[i].active ? (live ? " note=\"signing starts\"" : " note=\"signing stops\"") : "");
        }
}

char **dkim_keys_easy_domains(dkim_keys *k, size_t *n)
{
    char **out = util_calloc(k->n ? k->n : 1, sizeof *out);
    *n = 0;
    for (size_t i = 0; i < k->n; i++) {
        if (!k->v[i].easy) continue;
        bool seen = false;
        for (size_t j = 0; j < *n; j++)
            if (strcmp(out[j], k->v[i].domain) == 0) seen = true;
        if (!seen) out[(*n)++] = util_strdup(k->v[i].domain);
    }
    return out;
}

char **dkim_keys_alignment_warnings(dkim_keys *k, const config *cfg, size_t *n)
{
    char **out = util_calloc(cfg->nidentities ? cfg->nidentities : 1, sizeof *out);
    *n = 0;
    for (size_t i = 0; i < cfg->nidentities; i++) {
        const char *domain = dkim_keys_domain_of(cfg->identities[i]);
        bool key = false;
        for (size_t j = 0; j < k->n && !key; j++) key = k->v[j].active && strcmp(k->v[j].domain, domain) == 0;
        bool mail_from = cfg->identity_auth && cfg->identity_auth[i].mail_from_domain;
        if (key) continue;
        out[(*n)++] = util_asprintf(
            "identity %s would send unaligned mail: no DKIM key of %s (kilnctl identity dkim "
            "generate %s, or account.identities[].dkim.private_key_file)%s; receivers that "
            "enforce DMARC (Gmail, Yahoo) junk or reject bulk mail without an aligned DKIM "
            "signature", cfg->identities[i], domain, domain,
            mail_from ? "; its custom MAIL FROM aligns SPF only" : " and no custom MAIL FROM domain");
    }
    return out;
}
