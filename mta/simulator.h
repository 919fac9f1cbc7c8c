/* simulator.h — SES mailbox simulator addresses (SPEC section 2), recognised without network. */
#ifndef KILN_SIMULATOR_H
#define KILN_SIMULATOR_H

typedef enum {
    SIMULATOR_NONE = 0,
    SIMULATOR_SUCCESS,          /* Delivery */
    SIMULATOR_BOUNCE,           /* Bounce Permanent/General 5.1.1, not suppressed */
    SIMULATOR_OOTO,             /* Delivery + RFC 3834 auto-reply to the envelope sender */
    SIMULATOR_COMPLAINT,        /* Delivery then Complaint (abuse) */
    SIMULATOR_SUPPRESSIONLIST,  /* Bounce Permanent/Suppressed */
} simulator_kind;

/* Case-insensitive; "bounce+label@simulator.amazonses.com" counts as bounce. */
simulator_kind simulator_classify(const char *address);

#endif
