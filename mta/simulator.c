/* simulator.c — recognises the SES mailbox simulator addresses (SPEC section 2) without any
 * network: the domain must be exactly simulator.amazonses.com and the local part, with an
 * optional "+label" removed, one of the simulator's mailboxes. Case-insensitive. */
#include "mta/simulator.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#define SIMULATOR_DOMAIN "simulator.amazonses.com"

static const struct {
    const char *local;
    simulator_kind kind;
} simulator_boxes[] = {
    {"success", SIMULATOR_SUCCESS},
    {"bounce", SIMULATOR_BOUNCE},
    {"ooto", SIMULATOR_OOTO},
    {"complaint", SIMULATOR_COMPLAINT},
    {"suppressionlist", SIMULATOR_SUPPRESSIONLIST},
};

simulator_kind simulator_classify(const char *address)
{
    if (!address) return SIMULATOR_NONE;
    const char *at = strrchr(address, '@');
    if (!at || strcasecmp(at + 1, SIMULATOR_DOMAIN) != 0) return SIMULATOR_NONE;
    size_t local_len = (size_t)(at - address);
    const char *plus = memchr(address, '+', local_len);
    if (plus) local_len = (size_t)(plus - address);
    for (size_t i = 0; i < sizeof simulator_boxes / sizeof simulator_boxes[0]; i++) {
        const char *box = simulator_boxes[i].local;
        if (strlen(box) == local_len && strncasecmp(address, box, local_len) == 0)
            return simulator_boxes[i].kind;
    }
    return SIMULATOR_NONE;
}
