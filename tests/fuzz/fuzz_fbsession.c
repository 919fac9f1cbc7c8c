/* fuzz_fbsession.c — the session fuzz target (fuzz_session.c) driving the feedback
 * listener: one harness, built a second time with FUZZ_SESSION_FEEDBACK so that both
 * listeners get the same checks (the session ends, no byte of the in-flight budget is left,
 * no crash or leak) with corpora of their own. */
#define FUZZ_SESSION_FEEDBACK 1
#include "tests/fuzz/fuzz_session.c"
