#ifndef TM_SHAPE_H
#define TM_SHAPE_H

#include <stdint.h>

#endif
