#ifndef TM_POOL_H
#define TM_POOL_H

#include <stdint.h>

#endif
