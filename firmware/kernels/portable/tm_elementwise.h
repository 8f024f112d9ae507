#ifndef TM_ELEMENTWISE_H
#define TM_ELEMENTWISE_H

#include <stdint.h>

#endif
