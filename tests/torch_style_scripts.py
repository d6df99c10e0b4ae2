"""Four small training scripts written against torch's API, in the shape of the public
examples people port first: an MNIST-style classifier (Adadelta + StepLR), the
"training a classifier" tutorial net, a DCGAN whose weights_init goes through ``.data``,
and an ImageNet-style train/validate loop (AverageMeter, top-k accuracy, checkpoint and
resume). Written for cnnfast's tests; the datasets are the bundled digits.

Each script takes the library as its ``torch`` argument and uses nothing else of it,
so running it with ``torch`` or with ``cnnfast`` is the one-line import switch a user
makes. Each returns a dict of the figures the tests compare across the libraries.
"""
from __future__ import annotations

import os
import shutil
import time
from enum import Enum


def _datasets(torch, x_train, y_train, x_test, y_test):
    TensorDataset = torch.utils.data.TensorDataset
    return (TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
            TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test)))


# ---- 1. MNIST-style: conv-conv-pool-dropout-fc, Adadelta with StepLR --------------------

def mnist_style(torch, data, workdir, epochs=3, seed=1):
    nn, F, optim = torch.nn, torch.nn.functional, torch.optim
    from_lib = torch.optim.lr_scheduler

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, 1)
            self.conv2 = nn.Conv2d(16, 32, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(32 * 6 * 6, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = self.dropout1(F.max_pool2d(x, 2))
            x = torch.flatten(x, 1)
            x = self.dropout2(F.relu(self.fc1(x)))
            return F.log_softmax(self.fc2(x), dim=1)

    log = []

    def train(model, device, loader, optimizer, epoch):
        model.train()
        for batch_idx, (inputs, target) in enumerate(loader):
            inputs, target = inputs.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(inputs), target)
            loss.backward()
            optimizer.step()
            if batch_idx % 10 == 0:
                log.append("Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(
                    epoch, batch_idx * len(inputs), len(loader.dataset), 100.0 * batch_idx / len(loader), loss.item()))

    def test(model, device, loader):
        model.eval()
        total_loss, correct = 0, 0
        with torch.no_grad():
            for inputs, target in loader:
                inputs, target = inputs.to(device), target.to(device)
                output = model(inputs)
                total_loss += F.nll_loss(output, target, reduction="sum").item()
                pred = output.argmax(dim=1, keepdim=True)
                correct += pred.eq(target.view_as(pred)).sum().item()
        n = len(loader.dataset)
        log.append("Test set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)".format(
            total_loss / n, correct, n, 100.0 * correct / n))
        return total_loss / n, correct / n

    use_accel = torch.accelerator.is_available()
    torch.manual_seed(seed)
    device = torch.accelerator.current_accelerator() if use_accel else torch.device("cpu")
    train_kwargs, test_kwargs = {"batch_size": 64, "shuffle": True}, {"batch_size": 500}
    if use_accel:
        extra = {"num_workers": 1, "pin_memory": True}
        train_kwargs.update(extra)
        test_kwargs.update(extra)
    train_set, test_set = _datasets(torch, *data)
    train_loader = torch.utils.data.DataLoader(train_set, **train_kwargs)
    test_loader = torch.utils.data.DataLoader(test_set, **test_kwargs)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = from_lib.StepLR(optimizer, step_size=1, gamma=0.7)
    for epoch in range(1, epochs + 1):
        train(model, device, train_loader, optimizer, epoch)
        loss, acc = test(model, device, test_loader)
        scheduler.step()
    torch.save(model.state_dict(), os.path.join(workdir, "mnist_cnn.pt"))
    return {"accuracy": acc, "loss": loss, "lr": optimizer.param_groups[0]["lr"], "log": log}


# ---- 2. The "training a classifier" tutorial net (3-channel input, SGD momentum) ----------

def tutorial_style(torch, data, workdir, epochs=2, seed=0, lr=0.005):
    nn, F, optim = torch.nn, torch.nn.functional, torch.optim
    classes = tuple(str(d) for d in range(10))
    torch.manual_seed(seed)
    train_set, test_set = _datasets(torch, *data)
    trainloader = torch.utils.data.DataLoader(train_set, batch_size=4, shuffle=True, num_workers=2)
    testloader = torch.utils.data.DataLoader(test_set, batch_size=4, shuffle=False, num_workers=2)

    images, labels = next(iter(trainloader))
    first_labels = " ".join(f"{classes[labels[j]]:5s}" for j in range(4))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    log = []
    for epoch in range(epochs):
        running_loss = 0.0
        for i, (inputs, labels) in enumerate(trainloader, 0):
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i % 100 == 99:
                log.append(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 100:.3f}")
                running_loss = 0.0

    path = os.path.join(workdir, "digits_net.pth")
    torch.save(net.state_dict(), path)
    net = Net()
    net.load_state_dict(torch.load(path, weights_only=True))

    correct, total = 0, 0
    correct_pred = {name: 0 for name in classes}
    total_pred = {name: 0 for name in classes}
    with torch.no_grad():
        for images, labels in testloader:
            outputs = net(images)
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
            for label, prediction in zip(labels, predicted):
                if label == prediction:
                    correct_pred[classes[label]] += 1
                total_pred[classes[label]] += 1
    per_class = {name: correct_pred[name] / max(total_pred[name], 1) for name in classes}
    return {"accuracy": correct / total, "per_class": per_class, "first_labels": first_labels, "log": log}


# ---- 3. DCGAN with weights_init through .data ----------------------------------------------

def dcgan_style(torch, data, workdir, epochs=2, seed=999, vutils=None):
    """``vutils``: torchvision.utils for torch (cnnfast.utils for cnnfast)."""
    nn, optim = torch.nn, torch.optim
    nz, ngf, ndf, nc = 16, 16, 16, 1
    torch.manual_seed(seed)
    device = torch.device("cpu")
    x_train = data[0]
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x_train * 2 - 1))
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, num_workers=1, drop_last=True)

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            m.weight.data.normal_(0.0, 0.02)
        elif classname.find("BatchNorm") != -1:
            m.weight.data.normal_(1.0, 0.02)
            m.bias.data.fill_(0)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False),  # 4x4
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 8x8
                nn.BatchNorm2d(ngf),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # 16x16
                nn.Tanh(),
            )

        def forward(self, z):
            return self.main(z)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),  # 8x8
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # 4x4
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
                nn.Sigmoid(),
            )

        def forward(self, x):
            return self.main(x).view(-1, 1).squeeze(1)

    netG = Generator().to(device)
    netG.apply(weights_init)
    netD = Discriminator().to(device)
    netD.apply(weights_init)
    init_std = float(netD.main[0].weight.data.std())
    init_bn_bias = float(netD.main[3].bias.data.abs().sum())

    criterion = nn.BCELoss()
    fixed_noise = torch.randn(64, nz, 1, 1, device=device)
    real_label, fake_label = 1.0, 0.0
    optimizerD = optim.Adam(netD.parameters(), lr=0.0005, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0005, betas=(0.5, 0.999))
    history = []
    for epoch in range(epochs):
        for i, batch in enumerate(dataloader, 0):
            # (1) D: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            real_cpu = batch[0].to(device)
            b_size = real_cpu.size(0)
            label = torch.full((b_size,), real_label, dtype=real_cpu.dtype, device=device)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()

            noise = torch.randn(b_size, nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            optimizerD.step()

            # (2) G: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()
            history.append((errD.item(), errG.item(), D_x, D_G_z1, D_G_z2))
        vutils.save_image(real_cpu, os.path.join(workdir, "real_samples.png"), normalize=True)
        with torch.no_grad():
            fake = netG(fixed_noise)
        vutils.save_image(fake.detach(), os.path.join(workdir, f"fake_samples_epoch_{epoch:03d}.png"), normalize=True)
        torch.save(netG.state_dict(), os.path.join(workdir, f"netG_epoch_{epoch}.pth"))
    last = history[-5:]
    return {"init_std": init_std, "init_bn_bias": init_bn_bias, "history": history,
            "D_x": sum(h[2] for h in last) / len(last), "D_G_z": sum(h[3] for h in last) / len(last),
            "fake_range": (float(fake.min()), float(fake.max())), "fake_shape": tuple(fake.shape)}


# ---- 4. ImageNet-style train/validate loop with checkpoint and resume --------------------

class Summary(Enum):
    NONE = 0
    AVERAGE = 1


class AverageMeter:
    """Running value, sum and mean of a figure; printed with a format spec."""

    def __init__(self, name, fmt=":f", summary_type=Summary.AVERAGE):
        self.name, self.fmt, self.summary_type = name, fmt, summary_type
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count

    def __str__(self):
        return ("{name} {val" + self.fmt + "} ({avg" + self.fmt + "})").format(**self.__dict__)

    def summary(self):
        return "{name} {avg:.3f}".format(**self.__dict__) if self.summary_type is Summary.AVERAGE else ""


class ProgressMeter:
    def __init__(self, num_batches, meters, prefix=""):
        width = len(str(num_batches))
        self.batch_fmtstr = "[{:" + str(width) + "d}/" + str(num_batches) + "]"
        self.meters, self.prefix = meters, prefix

    def display(self, batch):
        return "\t".join([self.prefix + self.batch_fmtstr.format(batch)] + [str(m) for m in self.meters])


def imagenet_style(torch, data, workdir, epochs=2, resume_epochs=1, seed=0):
    nn = torch.nn
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False

    def topk_accuracy(output, target, topk=(1,)):
        """Percentage of samples whose target is among the k best-scored classes, per k."""
        with torch.no_grad():
            maxk, batch_size = max(topk), target.size(0)
            _, pred = output.topk(maxk, 1, True, True)
            pred = pred.t()
            hit = pred.eq(target.view(1, -1).expand_as(pred))
            return [hit[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size) for k in topk]

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    def make_model():
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2), Block(16), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                             nn.Linear(16, 10))

    device = torch.device("cpu")
    train_set, val_set = _datasets(torch, *data)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True, num_workers=2,
                                               pin_memory=True, persistent_workers=True)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=100, shuffle=False, num_workers=2,
                                             pin_memory=True)
    log = []

    def train(loader, model, criterion, optimizer, epoch):
        batch_time, data_time = AverageMeter("Time", ":6.3f"), AverageMeter("Data", ":6.3f")
        losses, top1, top5 = AverageMeter("Loss", ":.4e"), AverageMeter("Acc@1", ":6.2f"), AverageMeter("Acc@5", ":6.2f")
        progress = ProgressMeter(len(loader), [batch_time, data_time, losses, top1, top5],
                                 prefix="Epoch: [{}]".format(epoch))
        model.train()
        end = time.time()
        for i, (images, target) in enumerate(loader):
            data_time.update(time.time() - end)
            images = images.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            output = model(images)
            loss = criterion(output, target)
            acc1, acc5 = topk_accuracy(output, target, topk=(1, 5))
            losses.update(loss.item(), images.size(0))
            top1.update(acc1[0], images.size(0))
            top5.update(acc5[0], images.size(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_time.update(time.time() - end)
            end = time.time()
            if i % 20 == 0:
                log.append(progress.display(i + 1))

    def validate(loader, model, criterion):
        losses, top1, top5 = AverageMeter("Loss", ":.4e"), AverageMeter("Acc@1", ":6.2f"), AverageMeter("Acc@5", ":6.2f")
        model.eval()
        with torch.no_grad():
            for images, target in loader:
                images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
                output = model(images)
                acc1, acc5 = topk_accuracy(output, target, topk=(1, 5))
                losses.update(criterion(output, target).item(), images.size(0))
                top1.update(acc1[0], images.size(0))
                top5.update(acc5[0], images.size(0))
        log.append(" * " + top1.summary() + " " + top5.summary())
        return top1.avg, top5.avg

    def save_checkpoint(state, is_best, filename):
        torch.save(state, filename)
        if is_best:
            shutil.copyfile(filename, os.path.join(workdir, "model_best.pth.tar"))

    def run(model, optimizer, scheduler, start_epoch, end_epoch, best_acc1):
        criterion = nn.CrossEntropyLoss().to(device)
        acc1 = acc5 = None
        for epoch in range(start_epoch, end_epoch):
            train(train_loader, model, criterion, optimizer, epoch)
            acc1, acc5 = validate(val_loader, model, criterion)
            scheduler.step()
            is_best = acc1 > best_acc1
            best_acc1 = max(acc1, best_acc1)
            save_checkpoint({"epoch": epoch + 1, "arch": "tiny_resnet", "state_dict": model.state_dict(),
                             "best_acc1": best_acc1, "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict()}, is_best,
                            os.path.join(workdir, "checkpoint.pth.tar"))
        return acc1, acc5, best_acc1

    def build():
        model = make_model().to(device)
        optimizer = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return model, optimizer, scheduler

    model, optimizer, scheduler = build()
    acc1, acc5, best_acc1 = run(model, optimizer, scheduler, 0, epochs, 0)

    # Resume into fresh objects, as `--resume checkpoint.pth.tar` does.
    model, optimizer, scheduler = build()
    checkpoint = torch.load(os.path.join(workdir, "checkpoint.pth.tar"), map_location="cpu")
    start_epoch = checkpoint["epoch"]
    resumed_best = checkpoint["best_acc1"]
    model.load_state_dict(checkpoint["state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    restored_acc1, _ = validate(val_loader, model, nn.CrossEntropyLoss())
    lr_after_resume = optimizer.param_groups[0]["lr"]
    acc1_r, acc5_r, best_r = run(model, optimizer, scheduler, start_epoch, start_epoch + resume_epochs, resumed_best)
    return {"acc1": float(acc1), "acc5": float(acc5), "best_acc1": float(best_acc1), "start_epoch": start_epoch,
            "restored_acc1": float(restored_acc1), "lr_after_resume": lr_after_resume,
            "acc1_resumed": float(acc1_r), "best_resumed": float(best_r), "log": log}
