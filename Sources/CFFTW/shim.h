#ifndef MOIRE_CFFTW_SHIM_H
#define MOIRE_CFFTW_SHIM_H
#include <fftw3.h>
#endif
