#ifndef TM_ACTIVATION_H
#define TM_ACTIVATION_H

#include <stdint.h>

#endif
