/* C ABI of libmlip_engine.so (see docs/CONTRACT.md).
 *
 * Every function catches all exceptions; nothing throws across this ABI.
 * Functions that can fail write a short message into err (if err != NULL and
 * errlen > 0; always NUL-terminated, truncated to errlen). Meant to be loaded
 * with dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND) by the LAMMPS plugin.
 */
#ifndef MLIP_C_API_H
#define MLIP_C_API_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLIP_C_API_VERSION 4

typedef struct mlip_engine mlip_engine;

/* returns NULL on failure and writes a clear message into err (never throws across the ABI).
   num_threads <= 0: environment MLIP_NUM_THREADS, else 1. */
mlip_engine* mlip_engine_open(const char* path, int num_threads, char* err, int errlen);
void mlip_engine_close(mlip_engine*);
int mlip_engine_num_species(const mlip_engine*);
/* NULL if k is out of range */
const char* mlip_engine_species(const mlip_engine*, int k);
double mlip_engine_cutoff(const mlip_engine*);
double mlip_engine_interaction_range(const mlip_engine*);
const char* mlip_engine_family(const mlip_engine*);
const char* mlip_engine_units(const mlip_engine*);
const char* mlip_engine_metadata_json(const mlip_engine*);
/* n_atoms nodes (locals first), species[n_atoms] in model indices, edges (edge_i, edge_j, edge_vec[3E]).
   Outputs (caller-allocated, double): energy (sum over locals), atom_energy[n_atoms],
   forces[3*n_atoms], virial[9] (row-major 3x3), atom_virial[9*n_atoms] or NULL to skip.
   Returns 0 on success, nonzero with message in err. */
int mlip_engine_compute(mlip_engine*, int64_t n_atoms, int64_t n_local, const int64_t* species,
                        int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                        const double* edge_vec, double* energy, double* atom_energy,
                        double* forces, double* virial, double* atom_virial,
                        char* err, int errlen);

/* Extrapolation grade (added in C API version 2; see docs/CONTRACT.md "Extrapolation grade").
   1 if the export carries a MaxVol active set, else 0 (also for NULL). */
int mlip_engine_has_grade(const mlip_engine*);
/* Per-atom grade gamma[n_local] (caller-allocated, double) of the first n_local atoms, same graph
   input as mlip_engine_compute (ghosts out to the interaction range for message-passing models).
   Returns 0 on success, nonzero with message in err (e.g. no active set). */
int mlip_engine_grade(mlip_engine*, int64_t n_atoms, int64_t n_local, const int64_t* species,
                      int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                      const double* edge_vec, double* gamma, char* err, int errlen);

/* Message passing on a one-cutoff graph (added in C API version 3; docs/CONTRACT.md "Layer split").
   The caller's exchange of per-node rows [n_atoms][width] (double, graph-node order) between the
   layers of a message-passing model: reverse == 0: overwrite every ghost row (nodes n_local..n_atoms-1)
   with its owner's row; reverse == 1: add every ghost row onto its owner's row (on return the rows of
   the n_local local nodes hold the sums). Collective across the processes of a decomposition: every
   process calls compute/grade with an exchange for the same models in the same order, also with no
   atoms. Return 0, or nonzero to abort the evaluation. */
typedef int (*mlip_exchange_fn)(void* ctx, int reverse, int64_t width, double* rows);
/* 1 if the export has the layer split (ExportedLayeredModel), else 0 */
int mlip_engine_supports_exchange(const mlip_engine*);
/* the widest row the exchange of this model carries (its largest layer width; 0 without the split) */
int64_t mlip_engine_exchange_width(const mlip_engine*);
/* mlip_engine_compute / mlip_engine_grade with an exchange (NULL exchange: the plain functions) */
int mlip_engine_compute_exchange(mlip_engine*, int64_t n_atoms, int64_t n_local, const int64_t* species,
                                 int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                                 const double* edge_vec, mlip_exchange_fn exchange, void* ctx,
                                 double* energy, double* atom_energy, double* forces, double* virial,
                                 double* atom_virial, char* err, int errlen);
int mlip_engine_grade_exchange(mlip_engine*, int64_t n_atoms, int64_t n_local, const int64_t* species,
                               int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                               const double* edge_vec, mlip_exchange_fn exchange, void* ctx, double* gamma,
                               char* err, int errlen);

/* Thread counts (added in C API version 4): the one rule of the engine (an integer from 1 to
   max(4 x CPUs, 64)). text: a count as the user wrote it (a keyword's value), or NULL for the
   default (environment MLIP_NUM_THREADS if set and not empty, else 1); what: how the message names
   it. Returns the count, or 0 with "<what> must be an integer from 1 to N (...), got '<text>'" in err. */
int mlip_parse_num_threads(const char* text, const char* what, char* err, int errlen);

#ifdef __cplusplus
}
#endif

#endif /* MLIP_C_API_H */
