#ifndef MOIRE_CZMQ_SHIM_H
#define MOIRE_CZMQ_SHIM_H
#include <zmq.h>
#include <errno.h>

/// Integer-valued socket option setter (zmq_setsockopt takes a void pointer).
static inline int moire_zmq_setsockopt_int(void *socket, int option, int value) {
    return zmq_setsockopt(socket, option, &value, sizeof(value));
}
/// Integer-valued socket option getter.
static inline int moire_zmq_getsockopt_int(void *socket, int option, int *value) {
    size_t size = sizeof(*value);
    return zmq_getsockopt(socket, option, value, &size);
}
static inline int moire_zmq_errno(void) { return zmq_errno(); }
#endif
