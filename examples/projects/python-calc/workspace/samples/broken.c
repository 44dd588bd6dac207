/* Does not compile (the `build_error` scenario's build stage runs gcc on it): `count` is undeclared. */
#include <stdio.h>

int main(void) {
    printf("%d\n", count);
    return 0;
}
