/* tm_alloc's configuration for builds without a generated tinymem_alloc_config.h: 16 KiB of
 * heap with small general-purpose pools. `tinymem alloc-config --trace T --heap H` writes one
 * sized from the application's own allocation trace instead. */
#ifndef TM_ALLOC_DEFAULT_CONFIG_H
#define TM_ALLOC_DEFAULT_CONFIG_H

#define TM_ALLOC_HEAP_BYTES 16384u /* user bytes: pools, then the large region */
#define TM_ALLOC_META_BYTES 576u   /* out-of-band metadata: tm_alloc_meta_bytes() of this config */
#define TM_ALLOC_GRANULE 16u
#define TM_ALLOC_CANARIES 1
#define TM_ALLOC_TRACE 0
#define TM_ALLOC_ERRNO 1
#define TM_ALLOC_NUM_CLASSES 4
#define TM_ALLOC_CLASSES {16u, 64u}, {32u, 32u}, {64u, 16u}, {128u, 8u}

#endif /* TM_ALLOC_DEFAULT_CONFIG_H */
