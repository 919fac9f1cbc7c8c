/* config_identity.c — account.identities: each entry is a domain or an address (as before),
 * or a map that adds the identity's sender authentication (README "Sender authentication"):
 *
 *   - identity: example.com
 *     dkim:                          # BYODKIM; `dkim: required` alone: Easy DKIM, required
 *       selector: s1
 *       private_key_file: /etc/kiln/dkim/example.com.pem
 *       ed25519: {selector: s1e, private_key_file: /etc/kiln/dkim/example.com-ed.pem}
 *       required: true               # default true with a key file, false otherwise
 *       on_unsigned: defer           # defer | reject
 *     mail_from:
 *       domain: mail.example.com     # custom MAIL FROM (SES MailFromDomain)
 *       behavior_on_mx_failure: UseDefaultValue   # or RejectMessage
 *
 * Promises: every value is checked here (a --check-config error names the file, line and key);
 * the key files are only named here — they are read and checked (type, size) by kilnd
 * (mta/dkim_keys.c), which lives above this layer and has the crypto; identity_auth gets one
 * entry per identity, in the same order as identities. */
#include <string.h>

#include "base/config.h"
#include "base/config_internal.h"
#include "base/util.h"

#define CONFIG_IDENTITY_WHAT "a domain or an address (e.g. example.com, ops@example.com)"

void config_identity_clear(config_identity *id)
{
    free(id->dkim.selector);
    free(id->dkim.private_key_file);
    free(id->dkim_ed25519.selector);
    free(id->dkim_ed25519.private_key_file);
    free(id->mail_from_domain);
    memset(id, 0, sizeof *id);
}

static int config_identity_key(config_parser *p, yaml_node_t *m, config_dkim_key *k,
                               const char *const *extra)
{
    static const char *const base[] = {"selector", "private_key_file", NULL};
    const char *keys[12];
    size_t n = 0;
    for (size_t i = 0; base[i]; i++) keys[n++] = base[i];
    for (size_t i = 0; extra && extra[i] && n < 11; i++) keys[n++] = extra[i];
    keys[n] = NULL;
    if (config_as_map(p, m, keys) < 0) return -1;
    FIELD(m, "selector", v,
          config_as_str(p, v, config_valid_hostname, "a DKIM selector (e.g. s1, kiln2026)",
                        &k->selector));
    FIELD(m, "private_key_file", v, config_as_path(p, v, &k->private_key_file));
    if (!k->selector != !k->private_key_file)
        return config_fail(p, m, "needs both selector and private_key_file (or neither: Easy DKIM, "
                                 "kilnctl identity dkim generate)");
    if (k->selector) util_lowercase(k->selector);
    return 0;
}

static int config_identity_dkim(config_parser *p, yaml_node_t *v, config_identity *id)
{
    static const char *const extra[] = {"ed25519", "required", "on_unsigned", NULL};
    static const char *const bools[] = {"false", "true", NULL};
    static const char *const unsigned_names[] = {"defer", "reject", NULL};
    if (v->type == YAML_SCALAR_NODE) {
        const char *s = NULL;
        if (config_as_scalar(p, v, "a text value", &s) < 0) return -1;
        if (strcmp(s, "required") != 0)
            return config_fail(p, v, "'%s' is not 'required' nor a map {selector, private_key_file, "
                                     "ed25519, required, on_unsigned}", s);
        id->dkim_required = true;
        return 0;
    }
    if (config_identity_key(p, v, &id->dkim, extra) < 0) return -1;
    yaml_node_t *ed = config_lookup(p, v, "ed25519", NULL);
    if (ed) {
        size_t mark = config_push_key(p, "ed25519");
        if (config_identity_key(p, ed, &id->dkim_ed25519, NULL) < 0) return -1;
        if (!id->dkim_ed25519.selector)
            return config_fail(p, ed, "needs selector and private_key_file");
        if (!id->dkim.selector)
            return config_fail(p, ed, "a second (ed25519) key needs the first key (dkim.selector "
                                      "and dkim.private_key_file) too");
        if (strcmp(id->dkim.selector, id->dkim_ed25519.selector) == 0)
            return config_fail(p, ed, "selector '%s' is the first key's too: each key needs its own "
                                      "selector (its own DNS record)", id->dkim.selector);
        config_pop(p, mark);
    }
    int req = id->dkim.selector ? 1 : 0;
    FIELD(v, "required", f, config_as_enum(p, f, bools, &req));
    id->dkim_required = req == 1;
    int on = 0;
    FIELD(v, "on_unsigned", f, config_as_enum(p, f, unsigned_names, &on));
    id->on_unsigned = (config_on_unsigned)on;
    return 0;
}

/* True if sub is domain or a subdomain of it (both lower-case). */
static bool config_identity_under(const char *sub, const char *domain)
{
    size_t sl = strlen(sub), dl = strlen(domain);
    return sl > dl + 1 && sub[sl - dl - 1] == '.' && strcmp(sub + sl - dl, domain) == 0;
}

static int config_identity_mail_from(config_parser *p, yaml_node_t *v, const char *identity,
                                     config_identity *id)
{
    static const char *const keys[] = {"domain", "behavior_on_mx_failure", NULL};
    static const char *const behaviors[] = {"UseDefaultValue", "RejectMessage", NULL};
    if (config_as_map(p, v, keys) < 0) return -1;
    FIELD(v, "domain", f,
          config_as_str(p, f, config_valid_hostname, "a domain name", &id->mail_from_domain));
    if (!id->mail_from_domain) return config_fail(p, v, "needs domain (e.g. mail.example.com)");
    util_lowercase(id->mail_from_domain);
    const char *at = strrchr(identity, '@');
    const char *domain = at ? at + 1 : identity;
    if (!config_identity_under(id->mail_from_domain, domain)) {
        yaml_node_t *d = config_lookup(p, v, "domain", NULL);
        config_push_key(p, "domain");
        return config_fail(p, d, "'%s' is not a subdomain of %s (a MAIL FROM domain must be one, "
                                 "as SES requires, for SPF alignment)", id->mail_from_domain, domain);
    }
    int b = 0;
    FIELD(v, "behavior_on_mx_failure", f, config_as_enum(p, f, behaviors, &b));
    id->mx_failure = (config_mx_failure)b;
    return 0;
}

static int config_identity_entry(config_parser *p, yaml_node_t *it, char **name,
                                 config_identity *id)
{
    static const char *const keys[] = {"identity", "dkim", "mail_from", NULL};
    if (it->type != YAML_MAPPING_NODE)
        return config_as_str(p, it, config_valid_identity, CONFIG_IDENTITY_WHAT, name);
    if (config_as_map(p, it, keys) < 0) return -1;
    FIELD(it, "identity", v, config_as_str(p, v, config_valid_identity, CONFIG_IDENTITY_WHAT, name));
    if (!*name) return config_fail(p, it, "needs identity (a domain or an address)");
    util_lowercase(*name);
    FIELD(it, "dkim", v, config_identity_dkim(p, v, id));
    FIELD(it, "mail_from", v, config_identity_mail_from(p, v, *name, id));
    return 0;
}

int config_read_identities(config_parser *p, yaml_node_t *v)
{
    config *c = p->cfg;
    size_t n;
    if (config_as_list(p, v, &n) < 0) return -1;
    if (n == 0) return 0;
    c->identities = util_calloc(n, sizeof *c->identities);
    c->identity_auth = util_calloc(n, sizeof *c->identity_auth);
    c->nidentities = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = config_item(p, v, i);
        size_t m = config_push_index(p, i);
        if (config_identity_entry(p, it, &c->identities[i], &c->identity_auth[i]) < 0) return -1;
        util_lowercase(c->identities[i]);
        config_pop(p, m);
    }
    return 0;
}

int config_identity_index(const config *c, const char *addr)
{
    const char *at = strrchr(addr, '@');
    const char *domain = at ? at + 1 : addr;
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < c->nidentities; i++) {
        const char *e = c->identities[i];
        if (strchr(e, '@')) {
            if (at && util_streq_ci(e, addr)) return (int)i;   /* an address: most specific */
            continue;
        }
        size_t el = strlen(e), dl = strlen(domain);
        bool covers = (dl == el && util_streq_ci(domain, e)) ||
                      (dl > el && domain[dl - el - 1] == '.' && util_streq_ci(domain + dl - el, e));
        if (covers && el > best_len) {
            best = (int)i;
            best_len = el;
        }
    }
    return best;
}
