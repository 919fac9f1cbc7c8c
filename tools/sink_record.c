/* sink_record.c — kiln-sink's --record FILE: one line per message answered 250 at the end
 * of DATA, written (line-buffered, so a reader sees each line at once) before the 250 is
 * sent, so a message the client saw accepted is always in the file:
 *     <unix time in ms> <client ip> <recipients> <value>
 * where client ip is the peer address (the sender's source IP) and value the first
 * --record-header field (default Message-ID) of the message's header section, trimmed,
 * spaces replaced by '_', at most 256 bytes, or "-" when the message has no such field. Crash and soak tests (tests/soak) match these values with the
 * tokens their clients saw acknowledged, to count deliveries per message and duplicates.
 * The file is opened in append mode, so several sinks (or runs) may share it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tools/sink.h"

#define SINK_RECORD_VALUE_MAX 256

bool sink_record_open(sink *sk, char **err)
{
    if (!sk->o.record_file) return true;
    sk->record = fopen(sk->o.record_file, "a");
    if (!sk->record) {
        *err = util_asprintf("--record %s: %s", sk->o.record_file, strerror(errno));
        return false;
    }
    setvbuf(sk->record, NULL, _IOLBF, 0);
    sk->record_header_len = strlen(sk->o.record_header);
    return true;
}

void sink_record_close(sink *sk)
{
    if (sk->record) fclose(sk->record);
    sk->record = NULL;
}

void sink_record_begin(sink_session *s)
{
    sink_record_reset(s);
    s->in_headers = s->sk->record != NULL;
}

void sink_record_reset(sink_session *s)
{
    free(s->record_value);
    s->record_value = NULL;
    s->in_headers = false;
}

void sink_record_line(sink_session *s, const char *text, size_t len)
{
    if (!s->in_headers) return;
    if (len == 0) {                      /* the empty line ends the header section */
        s->in_headers = false;
        return;
    }
    size_t n = s->sk->record_header_len;
    if (s->record_value || len <= n || text[n] != ':' ||
        strncasecmp(text, s->sk->o.record_header, n) != 0)
        return;
    const char *v = text + n + 1, *end = text + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
    size_t vl = (size_t)(end - v);
    if (vl > SINK_RECORD_VALUE_MAX) vl = SINK_RECORD_VALUE_MAX;
    if (vl == 0) return;
    s->record_value = util_strndup(v, vl);
    for (char *p = s->record_value; *p; p++)
        if (*p == ' ' || *p == '\t') *p = '_';
}

void sink_record_accepted(sink_session *s)
{
    sink *sk = s->sk;
    if (!sk->record) return;
    if (fprintf(sk->record, "%lld %s %u %s\n", (long long)util_wall_ms(), s->c->ip, s->nrcpts,
                s->record_value ? s->record_value : "-") < 0)
        log_write(sk->log, KLOG_ERROR, "sink.record", "file=%s error=%s",
                  log_q(sk->log, sk->o.record_file), log_q(sk->log, strerror(errno)));
    sink_record_reset(s);
}
