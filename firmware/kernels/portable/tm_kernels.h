/* All portable int8 kernels: the C99 reference that defines tinymem's arithmetic.
 * One header per family; one uniform shape: fn(const params *, inputs..., outputs...[, scratch]). */
#ifndef TM_KERNELS_H
#define TM_KERNELS_H

#include "tm_activation.h"
#include "tm_conv.h"
#include "tm_elementwise.h"
#include "tm_fully_connected.h"
#include "tm_pool.h"
#include "tm_shape.h"

#endif
