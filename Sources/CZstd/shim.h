// zstd (Debian libzstd-dev): the OME-Zarr writer's chunk codec. Imported by MoireStorage only.
#include <zstd.h>
