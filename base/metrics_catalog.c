/* metrics_catalog.c — every metric family kilnd exports (README "Metrics"), registered in
 * one place so that names, types, help texts, labels and histogram buckets are read in one
 * file and documented from it. Counters and histograms are updated where things happen
 * (accept, settle, shaping, the spool's reap); the gauges are refilled at each scrape by
 * api/metrics_http.c from the state the modules already keep.
 *
 * Promises: names follow the Prometheus conventions (kiln_ prefix, _total counters, base
 * units _seconds/_bytes); every label value comes from the config (pools, IPs, zones, sets,
 * webhook URLs) or a fixed list (results, reasons, outcomes, delay types, states,
 * providers); the one unbounded label, a destination site, is under the top-N rule
 * (METRICS_TOP_SITES). */
#include "base/metrics.h"

#define METRICS_TOP_SITES 20
#define METRICS_TRACKED_SITES 1000

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

metrics *metrics_new_kiln(void)
{
    static const double commit_s[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1, 0.25, 0.5, 1, 2.5, 5};
    static const double batch[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
    static const double latency_s[] = {0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400,
                                       86400};
    metrics *m = metrics_new();
    metrics_register(m, "kiln_submissions_total", METRICS_COUNTER,
                     "Messages submitted (SMTP or the SES API), by result and reason.",
                     L("result", "reason"), NULL, 0);
    metrics_register(m, "kiln_recipients_total", METRICS_COUNTER,
                     "Delivery outcomes of recipients, by pool, source IP, zone and SES delay type.",
                     L("outcome", "pool", "ip", "zone", "delay_type"), NULL, 0);
    metrics_family *sites = metrics_register(
        m, "kiln_site_recipients_total", METRICS_COUNTER,
        "Delivery outcomes of recipients for the 20 destination sites with the most volume.",
        L("site", "outcome"), NULL, 0);
    metrics_top_n(sites, METRICS_TOP_SITES, METRICS_TRACKED_SITES);
    metrics_register(m, "kiln_shaping_backoffs_total", METRICS_COUNTER,
                     "Times a destination site's shaping backed off after throttling replies.",
                     NULL, NULL, 0);
    metrics_register(m, "kiln_spool_commit_seconds", METRICS_HISTOGRAM,
                     "Spool group commits: from the batch's hand-over to the writer to its reap "
                     "on the loop.", NULL, commit_s, ARRAY_LEN(commit_s));
    metrics_register(m, "kiln_spool_batch_writes", METRICS_HISTOGRAM,
                     "Writes (messages, outcomes, events, state) per spool group commit.", NULL,
                     batch, ARRAY_LEN(batch));
    metrics_register(m, "kiln_delivery_latency_seconds", METRICS_HISTOGRAM,
                     "From a message's injection to a recipient's delivery.", NULL, latency_s,
                     ARRAY_LEN(latency_s));
    /* gauges filled at scrape time */
    metrics_register(m, "kiln_queue_recipients", METRICS_GAUGE,
                     "Pending recipients by state and pool (pool \"\": paged out to the spool, "
                     "pool not known without reading it).", L("state", "pool"), NULL, 0);
    metrics_register(m, "kiln_sessions", METRICS_GAUGE,
                     "Open SMTP sessions: in (submission) and out (delivery).", L("direction"),
                     NULL, 0);
    metrics_register(m, "kiln_ip_up", METRICS_GAUGE,
                     "1 if the source IP may be used now (active, breaker not open, zone up).",
                     L("pool", "ip", "zone"), NULL, 0);
    metrics_register(m, "kiln_ip_state", METRICS_GAUGE,
                     "1 for the source IP's current state (active, draining, down) and health "
                     "(closed, open, half-open).", L("pool", "ip", "state", "health"), NULL, 0);
    metrics_register(m, "kiln_ip_warmup_ratio", METRICS_GAUGE,
                     "Warm-up position of a standard pool's IP, 0 to 1.", L("pool", "ip"), NULL,
                     0);
    metrics_register(m, "kiln_ip_daily_cap", METRICS_GAUGE,
                     "Recipients the IP may send per rolling 24 hours (absent: no cap).",
                     L("pool", "ip"), NULL, 0);
    metrics_register(m, "kiln_ip_sent_24h", METRICS_GAUGE,
                     "Recipients sent from the IP in the rolling 24 hours.", L("pool", "ip"),
                     NULL, 0);
    metrics_register(m, "kiln_ip_provider_cap", METRICS_GAUGE,
                     "Managed pools: the IP's daily cap for one mailbox provider.",
                     L("pool", "ip", "provider"), NULL, 0);
    metrics_register(m, "kiln_ip_provider_sent_24h", METRICS_GAUGE,
                     "Managed pools: recipients sent from the IP to one provider in 24 hours.",
                     L("pool", "ip", "provider"), NULL, 0);
    metrics_register(m, "kiln_ip_provider_held", METRICS_GAUGE,
                     "Managed pools: 1 if complaints hold the IP's ramp for the provider.",
                     L("pool", "ip", "provider"), NULL, 0);
    metrics_register(m, "kiln_zone_up", METRICS_GAUGE,
                     "1 if the zone is up (kilnctl zone up/down).", L("zone"), NULL, 0);
    metrics_register(m, "kiln_cluster_redis_up", METRICS_GAUGE,
                     "Cluster nodes: 1 while the link to Redis is up, 0 while the node runs "
                     "degraded on its own spool.", NULL, NULL, 0);
    metrics_register(m, "kiln_event_backlog", METRICS_GAUGE,
                     "Undelivered events per webhook destination.", L("set", "destination"),
                     NULL, 0);
    metrics_register(m, "kiln_event_dropped", METRICS_GAUGE,
                     "Events dropped past max_backlog per webhook destination (kept across "
                     "restarts).", L("set", "destination"), NULL, 0);
    metrics_register(m, "kiln_reputation_bounce_ratio", METRICS_GAUGE,
                     "Account bounce rate over the reputation window (as kilnctl reputation).",
                     NULL, NULL, 0);
    metrics_register(m, "kiln_reputation_complaint_ratio", METRICS_GAUGE,
                     "Account complaint rate over the reputation window (as kilnctl reputation).",
                     NULL, NULL, 0);
    metrics_register(m, "kiln_start_time_seconds", METRICS_GAUGE,
                     "When kilnd started, seconds since the Unix epoch.", NULL, NULL, 0);
    metrics_register(m, "process_resident_memory_bytes", METRICS_GAUGE,
                     "Resident memory size in bytes.", NULL, NULL, 0);
    metrics_register(m, "process_open_fds", METRICS_GAUGE, "Number of open file descriptors.",
                     NULL, NULL, 0);
    metrics_register(m, "process_max_fds", METRICS_GAUGE,
                     "Maximum number of open file descriptors.", NULL, NULL, 0);
    metrics_register(m, "process_cpu_seconds_total", METRICS_COUNTER,
                     "Total user and system CPU time spent in seconds.", NULL, NULL, 0);
    metrics_register(m, "process_start_time_seconds", METRICS_GAUGE,
                     "Start time of the process since unix epoch in seconds.", NULL, NULL, 0);
    return m;
}
