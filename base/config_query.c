/* config_query.c — a loaded config's lifetime and what the rest of kiln asks of it:
 * references (config_ref / config_unref), lookups of sets, pools and routes, trusted
 * networks, and the human summary kilnd --check-config prints.
 *
 * Promises: read-only over a config that config_load validated (every name it refers to
 * exists); the summary writes values back in the notation the file uses (10MB, 14h, 50/s). */
#include "base/config_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"

/* ------------------------------------------------------------------------------------------
 * Freeing
 * ---------------------------------------------------------------------------------------- */

static void config_free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void config_free(config *c)
{
    free(c->path);
    free(c->dir);
    free(c->hostname);
    free(c->region);
    free(c->spool);
    free(c->control_socket);
    free(c->log);
    free(c->user);
    free(c->group);
    for (size_t i = 0; i < c->ndns_servers; i++) free(c->dns_servers[i].host);
    free(c->dns_servers);
    for (size_t i = 0; i < c->nlisten; i++) free(c->listen[i].host);
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tls_ca_file);
    for (size_t i = 0; i < c->nauth; i++) config_scope_clear(&c->auth[i]);
    free(c->auth);
    config_api_free(c);
    config_feedback_free(c);
    config_metrics_free(c);
    config_cluster_free(c);
    free(c->trusted);
    for (size_t i = 0; c->identity_auth && i < c->nidentities; i++)
        config_identity_clear(&c->identity_auth[i]);
    free(c->identity_auth);
    config_free_strv(c->identities, c->nidentities);
    config_free_strv(c->verified_recipients, c->nverified_recipients);
    for (size_t i = 0; i < c->nroutes; i++) {
        free(c->routes[i].domain);
        free(c->routes[i].host);
    }
    free(c->routes);
    config_free_strv(c->zones, c->nzones);
    for (size_t i = 0; i < c->nips; i++) {
        free(c->ips[i].address);
        free(c->ips[i].public_address);
        free(c->ips[i].zone);
        free(c->ips[i].pool);
        free(c->ips[i].ehlo);
        free(c->ips[i].node);
    }
    free(c->ips);
    for (size_t i = 0; i < c->npools; i++) {
        free(c->pools[i].name);
        free(c->pools[i].overflow);
    }
    free(c->pools);
    for (size_t i = 0; i < c->nsets; i++) {
        free(c->sets[i].name);
        free(c->sets[i].pool);
        for (size_t j = 0; j < c->sets[i].nevents; j++) {
            free(c->sets[i].events[j].path);
            free(c->sets[i].events[j].url);
            free(c->sets[i].events[j].ca_file);
        }
        free(c->sets[i].events);
        free(c->sets[i].unsub_url);
        free(c->sets[i].unsub_mailto);
        free(c->sets[i].feedback_id);
    }
    free(c->sets);
    free(c->default_set);
    for (size_t i = 0; i < c->nproviders; i++) {
        free(c->providers[i].name);
        config_free_strv(c->providers[i].mx_suffix, c->providers[i].nmx_suffix);
    }
    free(c->providers);
    config_free_strv(c->warnings, c->nwarnings);
    free(c);
}

config *config_ref(config *cfg)
{
    if (cfg) {
        if (cfg->refs <= 0) util_fatal("config_ref on a released config %s", cfg->path);
        cfg->refs++;
    }
    return cfg;
}

void config_unref(config *cfg)
{
    if (!cfg) return;
    if (cfg->refs <= 0) util_fatal("config_unref on a released config %s", cfg->path);
    if (--cfg->refs == 0) config_free(cfg);
}


/* ------------------------------------------------------------------------------------------
 * Lookups and the summary
 * ---------------------------------------------------------------------------------------- */

const config_set *config_find_set(const config *cfg, const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < cfg->nsets; i++)
        if (strcmp(cfg->sets[i].name, name) == 0) return &cfg->sets[i];
    return NULL;
}

const config_pool *config_find_pool(const config *cfg, const char *name)
{
    int i = name ? config_pool_index(cfg, name) : -1;
    return i < 0 ? NULL : &cfg->pools[i];
}

const config_route *config_find_route(const config *cfg, const char *domain)
{
    if (!domain) return NULL;
    size_t n = strlen(domain);
    if (n && domain[n - 1] == '.') n--;   /* "demo.test." is demo.test */
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (strlen(cfg->routes[i].domain) == n &&
            strncasecmp(cfg->routes[i].domain, domain, n) == 0)
            return &cfg->routes[i];
    return NULL;
}

bool config_is_trusted(const config *cfg, const char *addr)
{
    if (!addr) return false;
    char buf[INET6_ADDRSTRLEN + 1];
    size_t n = strcspn(addr, "%");   /* drop an IPv6 scope ("fe80::1%eth0") */
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, addr, n);
    buf[n] = '\0';
    unsigned char v4[4], v6[16];
    bool has4 = false, has6 = false;
    if (inet_pton(AF_INET, buf, v4) == 1) {
        has4 = true;
        /* also as ::ffff:a.b.c.d for IPv6 networks */
        memset(v6, 0, 10);
        v6[10] = v6[11] = 0xff;
        memcpy(v6 + 12, v4, 4);
        has6 = true;
    } else if (inet_pton(AF_INET6, buf, v6) == 1) {
        has6 = true;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(v6, mapped, 12) == 0) {
            memcpy(v4, v6 + 12, 4);
            has4 = true;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < cfg->ntrusted; i++) {
        if (has4 && config_cidr_match(&cfg->trusted[i], AF_INET, v4)) return true;
        if (has6 && config_cidr_match(&cfg->trusted[i], AF_INET6, v6)) return true;
    }
    return false;
}

static void config_summary_set(strbuf *sb, const config *c, const config_set *s)
{
    bool dflt = c->default_set && strcmp(c->default_set, s->name) == 0;
    strbuf_printf(sb, "  %s%s -> pool %s, tls %s, max_delivery_time ", s->name,
                  dflt ? " (default)" : "", s->pool, config_tls_names[s->tls_policy]);
    config_fmt_duration(sb, s->max_delivery_time_ms);
    strbuf_printf(sb, ", priority %d", s->priority);
    if (s->nevents == 0) strbuf_puts(sb, ", no event destinations");
    for (size_t j = 0; j < s->nevents; j++) {
        const config_event_dest *e = &s->events[j];
        strbuf_printf(sb, "%s%s %s", j ? ", " : ", events: ",
                      e->type == CONFIG_EVENT_FILE ? "file" : "webhook",
                      e->type == CONFIG_EVENT_FILE ? e->path : e->url);
        if (e->type == CONFIG_EVENT_WEBHOOK) config_summary_webhook(sb, e);
    }
    config_summary_unsub(sb, s);
    strbuf_puts(sb, "\n");
}

char *config_summary(const config *cfg)
{
    const config *c = cfg;
    strbuf sb;
    strbuf_init(&sb);
    strbuf_printf(&sb, "config OK: %s\n", c->path);
    strbuf_printf(&sb, "server: %s, region %s, account mode %s (", c->hostname, c->region,
                  config_mode_names[c->mode]);
    if (c->max_24h_send < 0) strbuf_puts(&sb, "unlimited recipients per 24h, ");
    else strbuf_printf(&sb, "%lld recipients per 24h, ", (long long)c->max_24h_send);
    if (c->max_send_rate < 0) strbuf_puts(&sb, "no rate limit)\n");
    else strbuf_printf(&sb, "%g per second)\n", c->max_send_rate);
    strbuf_printf(&sb, "spool: %s, control socket %s, log %s (%s)\n", c->spool,
                  c->control_socket, c->log, log_level_name((klog_level)c->log_level));

    strbuf_puts(&sb, "dns: ");
    if (c->ndns_servers == 0) strbuf_puts(&sb, "servers from /etc/resolv.conf");
    for (size_t i = 0; i < c->ndns_servers; i++) {
        if (i) strbuf_puts(&sb, ", ");
        config_fmt_hostport(&sb, c->dns_servers[i].host, c->dns_servers[i].port);
    }
    strbuf_puts(&sb, ", timeout ");
    config_fmt_duration(&sb, c->dns_timeout_ms);
    strbuf_puts(&sb, "\n");

    strbuf_puts(&sb, "submission: listen ");
    for (size_t i = 0; i < c->nlisten; i++) {
        if (i) strbuf_puts(&sb, ", ");
        config_fmt_hostport(&sb, c->listen[i].host, c->listen[i].port);
    }
    strbuf_printf(&sb, "; STARTTLS %s; AUTH %s; trusted networks ", c->tls_cert ? "on" : "off",
                  c->nauth || c->napi_keys ? "required" : "off");
    if (c->ntrusted == 0) strbuf_puts(&sb, "none");
    for (size_t i = 0; i < c->ntrusted; i++) {
        if (i) strbuf_puts(&sb, ", ");
        config_cidr_to_text(&c->trusted[i], &sb);
    }
    strbuf_puts(&sb, "; max size ");
    config_fmt_size(&sb, c->max_message_size);
    strbuf_printf(&sb, ", %d recipients\n", c->max_recipients);
    if (c->napi_listen || c->napi_keys) {
        strbuf_puts(&sb, "api: ");
        if (c->napi_listen == 0) strbuf_puts(&sb, "no listener (access keys for SMTP AUTH only)");
        for (size_t i = 0; i < c->napi_listen; i++) {
            if (i) strbuf_puts(&sb, ", ");
            config_fmt_hostport(&sb, c->api_listen[i].host, c->api_listen[i].port);
        }
        strbuf_printf(&sb, "; %s; %zu access key(s)\n", c->api_tls_cert ? "https" : "http",
                      c->napi_keys);
    }
    if (c->feedback_on) {
        strbuf_puts(&sb, "feedback: listen ");
        for (size_t i = 0; i < c->nfeedback_listen; i++) {
            if (i) strbuf_puts(&sb, ", ");
            config_fmt_hostport(&sb, c->feedback_listen[i].host, c->feedback_listen[i].port);
        }
        strbuf_printf(&sb, "; bounce domain %s; %zu feedback address(es); max size ",
                      c->feedback_bounce_domain ? c->feedback_bounce_domain : "none",
                      c->nfeedback_addresses);
        config_fmt_size(&sb, c->feedback_max_message_size);
        strbuf_puts(&sb, ", retention ");
        config_fmt_duration(&sb, c->feedback_retention_ms);
        strbuf_printf(&sb, ", complaint hold rate %g%%\n", c->feedback_complaint_hold_rate * 100);
    }
    config_cluster_summary(&sb, c);

    strbuf_puts(&sb, "pools:\n");
    if (c->npools == 0) strbuf_puts(&sb, "  (none)\n");
    for (size_t i = 0; i < c->npools; i++) {
        const config_pool *pl = &c->pools[i];
        size_t n = 0, warm = 0;
        for (size_t j = 0; j < c->nips; j++)
            if (strcmp(c->ips[j].pool, pl->name) == 0) {
                n++;
                if (c->ips[j].warmup == CONFIG_WARMUP_DONE) warm++;
            }
        strbuf_printf(&sb, "  %s: %s, overflow %s, %zu IP%s (%zu warm)\n", pl->name,
                      config_scaling_names[pl->scaling], pl->overflow ? pl->overflow : "defer", n,
                      n == 1 ? "" : "s", warm);
    }
    strbuf_puts(&sb, "IPs per zone:\n");
    for (size_t z = 0; z < c->nzones; z++) {
        strbuf_printf(&sb, "  %s:", c->zones[z]);
        size_t n = 0;
        for (size_t j = 0; j < c->nips; j++) {
            const config_ip *ip = &c->ips[j];
            if (strcmp(ip->zone, c->zones[z]) != 0) continue;
            strbuf_printf(&sb, "%s %s (%s%s%s%s%s%s%s)", n++ ? "," : "", ip->address,
                          ip->public_address ? "public " : "",
                          ip->public_address ? ip->public_address : "",
                          ip->public_address ? ", " : "", ip->pool,
                          ip->warmup == CONFIG_WARMUP_DONE ? ", warm" : ", warming up",
                          ip->node ? ", node " : "", ip->node ? ip->node : "");
        }
        strbuf_puts(&sb, n ? "\n" : " (none)\n");
    }
    strbuf_puts(&sb, "configuration sets:\n");
    for (size_t i = 0; i < c->nsets; i++) config_summary_set(&sb, c, &c->sets[i]);
    strbuf_puts(&sb, "routes:\n");
    if (c->nroutes == 0) strbuf_puts(&sb, "  (none: MX lookup for every domain)\n");
    for (size_t i = 0; i < c->nroutes; i++) {
        strbuf_printf(&sb, "  %s -> ", c->routes[i].domain);
        config_fmt_hostport(&sb, c->routes[i].host, c->routes[i].port);
        strbuf_puts(&sb, "\n");
    }
    strbuf_printf(&sb, "warm-up: %d days from %lld to %lld per IP per day, advance %s, pacing ",
                  c->warmup.days, (long long)c->warmup.first_day, (long long)c->warmup.target,
                  config_advance_names[c->warmup.advance]);
    if (c->warmup.pacing) strbuf_printf(&sb, "%d/24\n", c->warmup.pacing);
    else strbuf_puts(&sb, "off\n");
    strbuf_printf(&sb, "shaping: %d connections, %d messages per connection, rate ",
                  c->shaping_default.connections, c->shaping_default.messages_per_connection);
    config_fmt_rate(&sb, &c->shaping_default.rate);
    for (size_t i = 0; i < c->nproviders; i++)
        strbuf_printf(&sb, "%s%s", i ? ", " : "; providers ", c->providers[i].name);
    strbuf_puts(&sb, "\n");
    for (size_t i = 0; i < c->nwarnings; i++) strbuf_printf(&sb, "warning: %s\n", c->warnings[i]);
    return strbuf_steal(&sb);
}

/* The default budget of in-flight message bytes: a quarter of physical memory, at least
 * 256MB and at most 4GB, and never below 4 x max_message_size (so that a few maximal
 * messages always fit). */
int64_t config_default_inflight_bytes(int64_t max_message_size)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    int64_t phys = pages > 0 && page > 0 ? (int64_t)pages * page : 0;
    int64_t x = phys / 4;
    if (x < 256 * KB * KB) x = 256 * KB * KB;
    if (x > 4 * KB * KB * KB) x = 4 * KB * KB * KB;
    if (max_message_size > 0 && x / 4 < max_message_size) x = 4 * max_message_size;
    return x;
}
