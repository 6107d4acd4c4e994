
/*
 * elearn-hash: reads one password on standard input and prints its
 * Argon2id PHC string with the module's parameters (m=19 MiB, t=2, p=1,
 * a 16-byte random salt, a 32-byte hash).  tools/elearnctl uses it: the
 * argon2 command-line tool refuses passwords of 128 bytes and more, and
 * elearn allows 1,024 characters.  The password never leaves this
 * process's memory, which is wiped before exit.
 */

#include <argon2.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define PW_MAX (1024 * 4 + 1) /* 1,024 code points of up to 4 bytes */
#define SALT_LEN 16
#define HASH_LEN 32
#define T_COST 2
#define M_COST 19456
#define PAR 1

int
main(void)
{
    char pw[PW_MAX + 1], phc[256];
    unsigned char salt[SALT_LEN];
    size_t len;
    ssize_t n;
    int rc;

    len = 0;
    while (len < sizeof(pw)) {
        n = read(STDIN_FILENO, pw + len, sizeof(pw) - len);
        if (n < 0) {
            perror("elearn-hash: read");
            return 1;
        }
        if (n == 0) {
            break;
        }
        len += (size_t) n;
    }

    if (len > PW_MAX) {
        fprintf(stderr, "elearn-hash: password too long\n");
        explicit_bzero(pw, sizeof(pw));
        return 2;
    }

    if (getrandom(salt, sizeof(salt), 0) != (ssize_t) sizeof(salt)) {
        perror("elearn-hash: getrandom");
        explicit_bzero(pw, sizeof(pw));
        return 1;
    }

    rc = argon2id_hash_encoded(T_COST, M_COST, PAR, pw, len, salt, sizeof(salt),
        HASH_LEN, phc, sizeof(phc));
    explicit_bzero(pw, sizeof(pw));

    if (rc != ARGON2_OK) {
        fprintf(stderr, "elearn-hash: %s\n", argon2_error_message(rc));
        return 1;
    }

    printf("%s\n", phc);
    return 0;
}
