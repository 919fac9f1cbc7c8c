/* control.h — kilnd's side of the control socket (a Unix socket, mode 0600). Protocol:
 * the client sends one JSON object per line, {"cmd": "status"|"quota"|"suppression.list"|
 * "suppression.add"|"suppression.remove"|"reload", "args": {...}}, and gets one JSON line
 * back: {"ok": true, "data": {...}} or {"ok": false, "error": "one-line reason"}. */
#ifndef KILN_CONTROL_H
#define KILN_CONTROL_H

struct kiln_ctx;
typedef struct control control;

control *control_start(struct kiln_ctx *ctx, char **err);
void control_free(control *c);   /* closes and unlinks the socket */

#endif
