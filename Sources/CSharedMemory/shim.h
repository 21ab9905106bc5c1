// Linux sealed memory files (memfd), which Swift's Glibc module does not show: the shared memory
// between the work broker and the workers on its machine. Imported by MoireTransport only.
#include <fcntl.h>
#include <linux/memfd.h>

// From glibc's <sys/mman.h>, declared only under _GNU_SOURCE.
int memfd_create(const char *name, unsigned int flags);

// From <linux/fcntl.h>, which clashes with glibc's <fcntl.h>.
enum {
    moire_add_seals = 1024 + 9,
    moire_get_seals = 1024 + 10,
    moire_seal_seal = 0x0001,
    moire_seal_shrink = 0x0002,
    moire_seal_grow = 0x0004,
};

/// A new memory file (close-on-exec, sealable); -1 and errno on failure.
static inline int moire_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

/// Fixes the file's size for good: it can no longer shrink (which would make a mapping's pages
/// beyond its end fault with SIGBUS), grow, or lose these seals. 0, or -1 and errno.
static inline int moire_seal_size(int fd) {
    return fcntl(fd, moire_add_seals, moire_seal_shrink | moire_seal_grow | moire_seal_seal);
}

/// 1 when the file's size is sealed (it cannot shrink or grow), 0 when not or not a memory file.
static inline int moire_size_is_sealed(int fd) {
    int seals = fcntl(fd, moire_get_seals);
    int wanted = moire_seal_shrink | moire_seal_grow;
    return seals >= 0 && (seals & wanted) == wanted;
}
