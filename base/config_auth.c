/* config_auth.c — a per-user authorization scope (submission.auth[], api.access_keys[]):
 * its keys (identities, configuration_sets), read by config_read_scope, and the cross-checks
 * that need the whole file read first (config_check_scope): each identity a user is limited to must be covered by
 * account.identities (equal to one, or an address or subdomain under one of its domains,
 * as mta/policy.c matches senders), and each configuration set must exist. Errors name the
 * file, line and key path like every config error. */
#include "base/config_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* True if identity (a domain or an address) is covered by one of list: equal to it, or an
 * address or subdomain under one of its domains (as mta/policy.c matches senders). */
static bool config_identity_covered(char *const *list, size_t n, const char *identity)
{
    const char *at = strrchr(identity, '@');
    const char *domain = at ? at + 1 : identity;
    size_t dlen = strlen(domain);
    for (size_t i = 0; i < n; i++) {
        const char *e = list[i];
        if (strchr(e, '@')) {
            if (strcasecmp(e, identity) == 0) return true;
            continue;
        }
        size_t elen = strlen(e);
        if (dlen == elen && strcasecmp(domain, e) == 0) return true;
        if (dlen > elen && domain[dlen - elen - 1] == '.' && strcasecmp(domain + dlen - elen, e) == 0)
            return true;
    }
    return false;
}

int config_read_scope(config_parser *p, yaml_node_t *it, config_auth_user *a)
{
    FIELD(it, "identities", f,
          (a->scoped_identities = true,
           config_as_strv(p, f, config_valid_identity,
                          "a domain or an address (e.g. example.com, ops@example.com)", true,
                          true, &a->identities, &a->nidentities)));
    FIELD(it, "configuration_sets", f,
          (a->scoped_sets = true,
           config_as_strv(p, f, config_valid_name, "a configuration set name", false, true,
                          &a->configuration_sets, &a->nconfiguration_sets)));
    return 0;
}

int config_check_scope(config_parser *p, yaml_node_t *it, const config_auth_user *a)
{
    config *c = p->cfg;
    size_t m = config_push_key(p, "identities");
    yaml_node_t *ids = config_lookup(p, it, "identities", NULL);
    for (size_t j = 0; j < a->nidentities; j++) {
        if (config_identity_covered(c->identities, c->nidentities, a->identities[j])) continue;
        config_push_index(p, j);
        return config_fail(p, config_item(p, ids, j),
                           "'%s' is not one of account.identities nor under one of its "
                           "domains (verify it there first)", a->identities[j]);
    }
    config_pop(p, m);
    m = config_push_key(p, "configuration_sets");
    yaml_node_t *sets = config_lookup(p, it, "configuration_sets", NULL);
    for (size_t j = 0; j < a->nconfiguration_sets; j++) {
        if (config_find_set(c, a->configuration_sets[j])) continue;
        config_push_index(p, j);
        return config_fail(p, config_item(p, sets, j), "unknown configuration set '%s'",
                           a->configuration_sets[j]);
    }
    config_pop(p, m);
    return 0;
}

void config_scope_clear(config_auth_user *a)
{
    free(a->user);
    free(a->password_hash);
    for (size_t i = 0; i < a->nidentities; i++) free(a->identities[i]);
    free(a->identities);
    for (size_t i = 0; i < a->nconfiguration_sets; i++) free(a->configuration_sets[i]);
    free(a->configuration_sets);
    memset(a, 0, sizeof *a);
}

/* After account and configuration_sets are read: every identity in a submission.auth scope
 * is covered by account.identities and every configuration set in one exists. */
int config_check_auth_scope(config_parser *p, yaml_node_t *root)
{
    config *c = p->cfg;
    yaml_node_t *sub = config_lookup(p, root, "submission", NULL);
    yaml_node_t *list = sub && sub->type == YAML_MAPPING_NODE ? config_lookup(p, sub, "auth", NULL) : NULL;
    if (!list || list->type != YAML_SEQUENCE_NODE) return 0;
    for (size_t i = 0; i < c->nauth; i++) {
        size_t m = config_push_key(p, "submission");
        config_push_key(p, "auth");
        config_push_index(p, i);
        if (config_check_scope(p, config_item(p, list, i), &c->auth[i]) < 0) return -1;
        config_pop(p, m);
    }
    return 0;
}
