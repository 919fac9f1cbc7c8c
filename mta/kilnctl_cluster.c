/* kilnctl_cluster.c — `kilnctl cluster status` as text (see kilnctl_cluster.h): a header
 * line for this node and Redis (up, or down since when: the node runs degraded on its own
 * spool), a line for the account's shared limits (leased from Redis, or the local share),
 * then a table of the nodes. */
#include "mta/kilnctl_cluster.h"

#include <stdio.h>
#include <string.h>

static const char *kilnctl_cluster_str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : "-";
}

void kilnctl_cluster_print(json_t *data)
{
    json_t *redis = json_object_get(data, "Redis");
    const char *state = kilnctl_cluster_str(redis, "State");
    printf("node %s; redis %s %s", kilnctl_cluster_str(data, "Node"),
           kilnctl_cluster_str(redis, "Url"), state);
    if (strcmp(state, "down") == 0)
        printf(" since %s (degraded: this node sends under its own spool; suppression "
               "writes are kept and sent when Redis returns)",
               kilnctl_cluster_str(redis, "DownSince"));
    putchar('\n');
    json_t *lim = json_object_get(data, "Limits");
    if (lim) {
        const char *mode = kilnctl_cluster_str(lim, "Mode");
        json_t *sent = json_object_get(lim, "AccountSent24h");
        char acct[32] = "unknown";
        if (json_is_integer(sent))
            snprintf(acct, sizeof acct, "%lld", (long long)json_integer_value(sent));
        if (strcmp(mode, "leased") == 0)
            printf("limits: leased from the account (holding %lld rate tokens, %lld 24 h slots; "
                   "account's 24 h count %s; %lld leases)\n",
                   (long long)json_integer_value(json_object_get(lim, "RateTokens")),
                   (long long)json_integer_value(json_object_get(lim, "DailySlots")), acct,
                   (long long)json_integer_value(json_object_get(lim, "Leases")));
        else
            printf("limits: local, this node holds %.4g%% of the account's rate and 24 h quota "
                   "until Redis answers\n",
                   json_number_value(json_object_get(lim, "Share")) * 100);
    }
    printf("%-16s %-8s %-26s %8s %8s  %-12s %s\n", "NODE", "ALIVE", "LAST SEEN", "QUEUED",
           "SESSIONS", "ZONES DOWN", "IPS");
    size_t i, k;
    json_t *n, *v;
    json_array_foreach(json_object_get(data, "Nodes"), i, n) {
        char name[80], queued[24] = "-", sessions[24] = "-", zones[128] = "", ips[512] = "";
        snprintf(name, sizeof name, "%s%s", kilnctl_cluster_str(n, "Node"),
                 json_is_true(json_object_get(n, "Self")) ? " (this)" : "");
        if (json_is_integer(json_object_get(n, "Queued")))
            snprintf(queued, sizeof queued, "%lld",
                     (long long)json_integer_value(json_object_get(n, "Queued")));
        if (json_is_integer(json_object_get(n, "Sessions")))
            snprintf(sessions, sizeof sessions, "%lld",
                     (long long)json_integer_value(json_object_get(n, "Sessions")));
        json_array_foreach(json_object_get(n, "ZonesDown"), k, v) {
            size_t len = strlen(zones);
            snprintf(zones + len, sizeof zones - len, "%s%s", len ? "," : "",
                     json_string_value(v) ? json_string_value(v) : "?");
        }
        json_array_foreach(json_object_get(n, "Ips"), k, v) {
            size_t len = strlen(ips);
            snprintf(ips + len, sizeof ips - len, "%s%s", len ? " " : "",
                     json_string_value(v) ? json_string_value(v) : "?");
        }
        printf("%-16s %-8s %-26s %8s %8s  %-12s %s\n", name, kilnctl_cluster_str(n, "Alive"),
               kilnctl_cluster_str(n, "LastSeen"), queued, sessions, zones[0] ? zones : "-",
               ips[0] ? ips : "-");
    }
}
