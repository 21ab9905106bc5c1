#ifndef MOIRE_CDNNL_SHIM_H
#define MOIRE_CDNNL_SHIM_H
#include <dnnl.h>
#endif
