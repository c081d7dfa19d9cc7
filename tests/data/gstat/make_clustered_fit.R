# gstat fit.variogram on two sample variograms of regression-kriging residuals from
# clustered profiles (the sample workflow's out-of-bag residuals in one CV fold), for
# tests/test_variogram.py.
#
# Run from the repository root:  Rscript tests/data/gstat/make_clustered_fit.R
# Writes tests/data/gstat/clustered_fit.json: per case the sample variogram (np, dist in
# m, gamma), gstat's fitted exponential model with a free nugget (vgm(NA, "Exp", NA, NA),
# fit.method 7), and the warnings gstat gave.
#
# "clustered": ln stocks 0-30 cm. With gstat's default 15 lags of 58 km the first lag
#   (mean distance 14 km, within-cluster pairs) is the only one below the sill, so the
#   free-nugget fit heads for a negative nugget in small bounded steps; it uses all 200
#   iterations (gstat 2.1's DEF_iter), then fit.variogram fixes the nugget at zero and the
#   refit converges.
# "ill_posed": stocks 0-300 cm (102 profiles): a jagged sample variogram on which the
#   final fit does not converge either.

suppressPackageStartupMessages({
  library(gstat)
  library(jsonlite)
})
out <- "tests/data/gstat/clustered_fit.json"
num <- function(v) structure(paste0("[", paste(sprintf("%.17g", v), collapse = ", "), "]"),
                             class = "json")
one <- function(v) structure(sprintf("%.17g", v), class = "json")

cases <- list(
  clustered = list(
    np = c(4481, 932, 2206, 2846, 1423, 2756, 2301, 2592, 3281, 3329, 4673, 2735, 2390, 3215, 4137),
    dist = c(13779.843301912328, 84075.15791792935, 149985.58779971112, 187304.84133904387,
             256900.20550758802, 308287.3090073268, 360275.09499512834, 416046.98818386754,
             477314.4288391742, 527452.9198070839, 582497.1662424735, 638036.5858475397,
             698376.508839296, 752570.5916298009, 805567.5688039253),
    gamma = c(0.04482614161021566, 0.09347968359202474, 0.07401166595422472,
              0.06989459819215464, 0.07250587391117203, 0.0777811113559775,
              0.0931376463985111, 0.07781328541496453, 0.0721490267496005,
              0.06959258803420088, 0.06758671208372653, 0.0839436484210314,
              0.06968850757542587, 0.07078101770505275, 0.06698442177417327)
  ),
  ill_posed = list(
    np = c(178, 54, 64, 149, 66, 56, 75, 160, 67, 156, 181, 151, 114, 219, 170),
    dist = c(13534.624436398371, 85534.05616009729, 142938.83991406194, 184895.37059312643,
             252866.07741271658, 288370.7979425007, 350205.25148645794, 404509.48575952335,
             458875.7997128173, 521284.23906772165, 573801.3396092663, 618437.4467825851,
             672531.5224502353, 728669.9231273448, 786775.559029093),
    gamma = c(445.3359879295437, 1021.741458871116, 550.2006350742124, 511.68929592191625,
              721.803331009977, 666.4103858857841, 496.38601853842175, 643.3505980024652,
              411.11166467489807, 578.7584503208533, 374.15272506555135, 622.8958633735928,
              420.20750028362954, 563.6535742979531, 582.0767963667921)
  )
)

res <- list(gstat_version = as.character(packageVersion("gstat")))
for (name in names(cases)) {
  s <- cases[[name]]
  v <- data.frame(np = as.numeric(s$np), dist = s$dist, gamma = s$gamma,
                  dir.hor = 0, dir.ver = 0, id = factor("var1"))
  class(v) <- c("gstatVariogram", "data.frame")
  attr(v, "direct") <- data.frame(id = "var1", is.direct = TRUE)  # as variogram() sets it
  warned <- character(0)
  f <- withCallingHandlers(
    fit.variogram(v, vgm(NA, "Exp", NA, NA)),
    warning = function(w) {
      warned <<- c(warned, conditionMessage(w))
      invokeRestart("muffleWarning")
    }
  )
  res[[name]] <- list(
    np = num(s$np), dist = num(s$dist), gamma = num(s$gamma),
    psill = one(f$psill[f$model == "Exp"]), range = one(f$range[f$model == "Exp"]),
    nugget = one(f$psill[f$model == "Nug"]), warnings = I(warned)
  )
}
write_json(res, out, auto_unbox = TRUE, pretty = TRUE, json_verbatim = TRUE)
