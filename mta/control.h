/* control.h — kilnd's side of the control socket (a Unix socket, mode 0600). Protocol:
 * the client sends one JSON object per line, {"cmd": "status"|"quota"|"stats"|
 * "reputation"|"suppression.list"|"suppression.add"|"suppression.remove"|"reload"|"ips"|
 * "ip.warmup"|"ip.check"|"zone.down"|"zone.up"|"queue"|"queue.explain", "args": {...}}, and
 * gets one JSON line back: {"ok": true, "data": {...}} or {"ok": false, "error": "one-line
 * reason"}. Arguments: suppression.* {address, reason}; ip.warmup {address (the bound or the
 * public one), percent (integer 0..100)}; ip.check {address (either)}; zone.down/zone.up
 * {zone}; queue {domain (optional)}; queue.explain {id}. */
#ifndef KILN_CONTROL_H
#define KILN_CONTROL_H

struct kiln_ctx;
typedef struct control control;

control *control_start(struct kiln_ctx *ctx, char **err);
void control_free(control *c);   /* closes and unlinks the socket */

#endif
