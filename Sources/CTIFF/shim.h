#ifndef MOIRE_CTIFF_SHIM_H
#define MOIRE_CTIFF_SHIM_H
#include <tiffio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdarg.h>

/* TIFFSetField / TIFFGetField are variadic; Swift cannot call them. One typed shim per use. */
static inline int moire_tiff_set_u16(TIFF *t, uint32_t tag, uint16_t v) { return TIFFSetField(t, tag, v); }
static inline int moire_tiff_set_u32(TIFF *t, uint32_t tag, uint32_t v) { return TIFFSetField(t, tag, v); }
static inline int moire_tiff_set_double(TIFF *t, uint32_t tag, double v) { return TIFFSetField(t, tag, v); }
static inline int moire_tiff_set_string(TIFF *t, uint32_t tag, const char *v) { return TIFFSetField(t, tag, v); }
static inline int moire_tiff_get_u16(TIFF *t, uint32_t tag, uint16_t *v) { return TIFFGetField(t, tag, v); }
static inline int moire_tiff_get_u32(TIFF *t, uint32_t tag, uint32_t *v) { return TIFFGetField(t, tag, v); }
static inline int moire_tiff_get_float(TIFF *t, uint32_t tag, float *v) { return TIFFGetField(t, tag, v); }
static inline int moire_tiff_get_string(TIFF *t, uint32_t tag, const char **v) { return TIFFGetField(t, tag, v); }
static inline int moire_tiff_get_u64_array(TIFF *t, uint32_t tag, const uint64_t **v) { return TIFFGetField(t, tag, v); }
static inline int moire_tiff_set_rational_resolution(TIFF *t, float x, float y, uint16_t unit) {
    return TIFFSetField(t, TIFFTAG_XRESOLUTION, (double)x) && TIFFSetField(t, TIFFTAG_YRESOLUTION, (double)y)
        && TIFFSetField(t, TIFFTAG_RESOLUTIONUNIT, unit);
}

/* Error and warning messages: libtiff prints to stderr by default. Route them to a buffer the
   Swift funnel reads right after a failing call. */
static inline char *moire_tiff_errbuf(void) { static __thread char buf[512]; return buf; }
static inline void moire_tiff_error_handler(const char *module, const char *fmt, va_list ap) {
    char *b = moire_tiff_errbuf();
    int n = 0;
    if (module) { n = snprintf(b, 512, "%s: ", module); if (n < 0 || n >= 512) n = 0; }
    vsnprintf(b + n, 512 - n, fmt, ap);
}
static inline void moire_tiff_warning_handler(const char *module, const char *fmt, va_list ap) { (void)module; (void)fmt; (void)ap; }
static inline void moire_tiff_install_handlers(void) {
    TIFFSetErrorHandler(moire_tiff_error_handler);
    TIFFSetWarningHandler(moire_tiff_warning_handler);
}
static inline const char *moire_tiff_last_error(void) { return moire_tiff_errbuf(); }
static inline void moire_tiff_clear_error(void) { moire_tiff_errbuf()[0] = 0; }
#endif
