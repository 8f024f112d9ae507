#ifndef TM_CONV_H
#define TM_CONV_H

#include <stdint.h>

#endif
