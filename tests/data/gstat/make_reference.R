# Reference numbers from R gstat for tests/test_variogram.py and tests/test_kriging.py.
#
# Run from the repository root:  Rscript tests/data/gstat/make_reference.R [OUTDIR]
# Writes (to OUTDIR, default tests/data/gstat):
#   data.csv        150 sample points: id, x, y (m), cov1, z
#   targets.csv     205 prediction points: id, x, y, cov1 (the last 5 sit on data points)
#   variogram.json  sample variograms (np, dist, gamma), fitted variograms and their
#                   starting values, gstat version
#   krige_cases.csv one row per kriging case: variogram (gstat vgm parameters),
#                   nmax and maxdist (0 = not set), formula
#   krige.csv       predictions and variances per case and target: ordinary kriging
#                   with fixed variograms (global, nmax = 8, 32, and nmax = 32 with
#                   maxdist), plus one universal kriging case (z ~ cov1)
#
# Every number is written with 17 significant digits and the inputs are read back
# from the CSV files before use, so Python and R work on identical doubles.

suppressPackageStartupMessages({
  library(gstat)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args) >= 1) args[1] else "tests/data/gstat"
dir.create(out, showWarnings = FALSE, recursive = TRUE)

# jsonlite prints at most 15 significant digits; numbers go in verbatim instead
num <- function(v) {
  txt <- sprintf("%.17g", as.numeric(v))
  structure(if (length(v) == 1) txt else paste0("[", paste(txt, collapse = ", "), "]"),
            class = "json")
}
exact <- function(obj) {
  if (is.list(obj)) return(lapply(obj, exact))
  if (is.double(obj)) return(num(obj))
  obj
}

fmt <- function(df) {
  for (nm in names(df)) if (is.double(df[[nm]])) df[[nm]] <- sprintf("%.17g", df[[nm]])
  df
}
write_exact <- function(df, name) {
  write.csv(fmt(df), file.path(out, name), row.names = FALSE, quote = FALSE)
  read.csv(file.path(out, name))
}

# ---------------------------------------------------------------- data
set.seed(20240501)
n <- 150
x <- runif(n, 0, 10000)
y <- runif(n, 0, 8000)
# a covariate that varies smoothly in space, plus noise
cov1 <- 2 + sin(x / 2500) + cos(y / 3000) + rnorm(n, sd = 0.3)
# correlated residual: exponential covariance, range 1200 m, sill 1, plus a nugget
D <- as.matrix(dist(cbind(x, y)))
L <- t(chol(exp(-D / 1200) + diag(1e-10, n)))
resid <- as.vector(L %*% rnorm(n)) + rnorm(n, sd = sqrt(0.1))
z <- 5 + 0.8 * cov1 + resid
data <- write_exact(data.frame(id = seq_len(n), x = x, y = y, cov1 = cov1, z = z), "data.csv")

m <- 200
tx <- runif(m, 200, 9800)
ty <- runif(m, 200, 7800)
tcov1 <- 2 + sin(tx / 2500) + cos(ty / 3000)
on_data <- c(3, 40, 77, 101, 150)
targets <- data.frame(
  id = seq_len(m + length(on_data)),
  x = c(tx, data$x[on_data]),
  y = c(ty, data$y[on_data]),
  cov1 = c(tcov1, data$cov1[on_data])
)
targets <- write_exact(targets, "targets.csv")

# nmax neighbourhoods are only comparable if the nmax-th and (nmax+1)-th neighbours
# differ clearly at every target: gstat ranks them by squared distances held in
# single precision (relative resolution ~1e-7), so require a relative gap of 1e-5
for (k in c(8, 32)) {
  gap <- apply(as.matrix(dist(rbind(targets[, c("x", "y")], data[, c("x", "y")]))
                         )[seq_len(nrow(targets)), nrow(targets) + seq_len(n)], 1,
               function(d) { d2 <- sort(d)^2; (d2[k + 1] - d2[k]) / d2[k] })
  stopifnot(min(gap) > 1e-5)
}

# ---------------------------------------------------------------- sample variograms
v_default <- variogram(z ~ 1, locations = ~ x + y, data = data)
v_custom <- variogram(z ~ 1, locations = ~ x + y, data = data, cutoff = 4000, width = 400)
sv <- function(v) list(np = as.numeric(v$np), dist = v$dist, gamma = v$gamma)

fit_one <- function(v, model, fit.method = 7, nugget = TRUE, kappa = 0.5) {
  start <- if (nugget) vgm(NA, model, NA, NA, kappa = kappa) else vgm(NA, model, NA, kappa = kappa)
  init <- gstat:::vgm_fill_na(start, v)
  f <- fit.variogram(v, start, fit.method = fit.method)
  part <- function(mm, what) {
    nug <- mm[mm$model == "Nug", what]
    str <- mm[mm$model != "Nug", what]
    list(nugget = if (length(nug)) nug[1] else 0, value = str[1])
  }
  list(
    model = model, kappa = kappa, fit_method = fit.method, fit_nugget = nugget,
    init = list(psill = part(init, "psill")$value, range = part(init, "range")$value,
                nugget = part(init, "psill")$nugget),
    psill = part(f, "psill")$value, range = part(f, "range")$value,
    nugget = part(f, "psill")$nugget,
    sserr = attr(f, "SSErr"), singular = attr(f, "singular")
  )
}
fits <- list(
  fit_one(v_default, "Sph"),
  fit_one(v_default, "Exp"),
  fit_one(v_default, "Gau"),
  fit_one(v_default, "Mat", kappa = 1.5),
  fit_one(v_default, "Sph", nugget = FALSE),
  fit_one(v_default, "Sph", fit.method = 1),
  fit_one(v_default, "Sph", fit.method = 2),
  fit_one(v_default, "Sph", fit.method = 6),
  fit_one(v_custom, "Exp")
)

write_json(
  exact(list(
    gstat_version = as.character(packageVersion("gstat")),
    r_version = R.version.string,
    bbox_diagonal = sqrt(diff(range(data$x))^2 + diff(range(data$y))^2),
    sample_default = sv(v_default),
    sample_custom = c(list(cutoff = 4000, width = 400), sv(v_custom)),
    fits = fits
  )),
  file.path(out, "variogram.json"), auto_unbox = TRUE, pretty = TRUE, json_verbatim = TRUE
)

# ---------------------------------------------------------------- kriging with fixed variograms
models <- list(
  sph = list(model = "Sph", psill = 0.9, range = 3000, nugget = 0.15, kappa = 0.5),
  exp = list(model = "Exp", psill = 0.9, range = 1200, nugget = 0.15, kappa = 0.5),
  gau = list(model = "Gau", psill = 0.9, range = 1500, nugget = 0.15, kappa = 0.5),
  mat = list(model = "Mat", psill = 0.9, range = 800, nugget = 0.15, kappa = 1.5),
  sph0 = list(model = "Sph", psill = 1.0, range = 3000, nugget = 0.0, kappa = 0.5)
)
as_vgm <- function(p) {
  if (p$nugget > 0) vgm(p$psill, p$model, p$range, p$nugget, kappa = p$kappa)
  else vgm(p$psill, p$model, p$range, kappa = p$kappa)
}
hoods <- list(
  list(name = "global", nmax = Inf, maxdist = Inf),
  list(name = "nmax8", nmax = 8, maxdist = Inf),
  list(name = "nmax32", nmax = 32, maxdist = Inf)
)
rows <- list()
add <- function(case, p, hood, formula, res) {
  rows[[length(rows) + 1]] <<- data.frame(
    case = case, model = p$model, psill = p$psill, range = p$range, nugget = p$nugget,
    kappa = p$kappa, nmax = if (is.finite(hood$nmax)) hood$nmax else 0,
    maxdist = if (is.finite(hood$maxdist)) hood$maxdist else 0, formula = formula,
    target = targets$id, pred = res$var1.pred, var = res$var1.var
  )
}
for (key in names(models)) {
  p <- models[[key]]
  for (hood in hoods) {
    res <- krige(z ~ 1, locations = ~ x + y, data = data, newdata = targets,
                 model = as_vgm(p), nmax = hood$nmax, maxdist = hood$maxdist, debug.level = 0)
    add(paste(key, hood$name, sep = "_"), p, hood, "z~1", res)
  }
}
hood <- list(name = "nmax32_maxdist1500", nmax = 32, maxdist = 1500)
res <- krige(z ~ 1, locations = ~ x + y, data = data, newdata = targets,
             model = as_vgm(models$sph), nmax = 32, maxdist = 1500, debug.level = 0)
add("sph_nmax32_maxdist1500", models$sph, hood, "z~1", res)
# universal kriging with the covariate as a linear trend (global)
uk <- list(model = "Sph", psill = 0.8, range = 2500, nugget = 0.1, kappa = 0.5)
res <- krige(z ~ cov1, locations = ~ x + y, data = data, newdata = targets,
             model = as_vgm(uk), debug.level = 0)
add("uk_sph_global", uk, hoods[[1]], "z~cov1", res)

krige_out <- do.call(rbind, rows)
cases <- unique(krige_out[, c("case", "model", "psill", "range", "nugget", "kappa",
                              "nmax", "maxdist", "formula")])
invisible(write_exact(cases, "krige_cases.csv"))
invisible(write_exact(krige_out[, c("case", "target", "pred", "var")], "krige.csv"))
cat("wrote", out, ":", nrow(cases), "kriging cases,", nrow(krige_out), "rows\n")
