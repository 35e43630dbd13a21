// Argument checks that throw std::invalid_argument.
#pragma once

#include <stdexcept>
#include <string>  // for the messages callers build

// The message is built only when the check fails: a one-query search makes a dozen checks, and
// a graph's load one per link, and building their messages every time cost a microsecond a
// search and most of a load's checking.
#define AMIPS_REQUIRE(ok, message)                                        \
    do {                                                                  \
        if (!(ok)) throw std::invalid_argument(message);                  \
    } while (false)
